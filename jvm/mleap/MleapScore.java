// Score rows with MLeap's own JVM runtime, to check that a Bundle.ML written by
// jobs/bundle/export.py loads and scores in MLeap as it does in our runtime.
//
// Classpath (MLeap 0.20.0, Scala 2.12; the newest the Maven mirror here serves): `make` fetches
// it into .jars/mleap (jobs/jars.py); jobs/bundle/mleap_check.py runs this program.
// Run with Java 17's single-file source launcher (no build step):
//   java -cp 'DIR/*' jvm/mleap/MleapScore.java BUNDLE.zip INPUT.json OUTPUT.json [...]
// (more BUNDLE INPUT OUTPUT triples score in the same JVM).
// No --add-opens is needed for this (loading a zip bundle, scoring a leap frame) on Java 17 or
// Java 25; MLEAP_SCORE_TIMING=1 prints the time of each phase on stderr.
//
// INPUT.json:
//   {"schema": [{"name": "age", "type": "double", "nullable": true},
//               {"name": "plan", "type": "string", "nullable": true}, ...],
//    "rows": [[53.1, "basic"], [null, null], ...]}
// Types: double, string (also long, boolean, passed to MLeap as such). Any value may be null
// in a nullable column. Booleans the model reads as numbers should be sent as doubles 0/1.
//
// OUTPUT.json: the outputs of the bundle's last node (the model), read from the bundle:
//   {"bundle": NAME, "node": NODE_NAME, "transformer": CLASS,
//    "outputs": [{"port": "probability", "name": "probability", "type": "tensor"},
//                {"port": "prediction", "name": "prediction", "type": "double"}],
//    "ignored_ports": [],   (ports the node declares that MLeap's op does not produce)
//    "rows": [{"probability": [0.8, 0.2], "prediction": 0.0}, ...]}   (keyed by column name)
// A tensor is written whole (a multiclass model's probability has one value per class, in
// class-index order), so the check compares every class's probability.
//
// Exit status: 0 scored; 2 bad arguments or input; 3 MLeap refused the bundle; 4 MLeap refused
// a row (the message names the first such row). Errors are one line on stderr.

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import ml.combust.bundle.dsl.Bundle;
import ml.combust.mleap.core.types.DataType;
import ml.combust.mleap.core.types.ScalarType;
import ml.combust.mleap.core.types.Socket;
import ml.combust.mleap.core.types.StructField;
import ml.combust.mleap.core.types.StructType;
import ml.combust.mleap.core.types.TensorType;
import ml.combust.mleap.runtime.MleapContext;
import ml.combust.mleap.runtime.frame.DefaultLeapFrame;
import ml.combust.mleap.runtime.frame.Row;
import ml.combust.mleap.runtime.frame.Transformer;
import ml.combust.mleap.runtime.javadsl.BundleBuilder;
import ml.combust.mleap.runtime.javadsl.ContextBuilder;
import ml.combust.mleap.runtime.javadsl.LeapFrameBuilder;
import ml.combust.mleap.runtime.javadsl.LeapFrameSupport;
import ml.combust.mleap.runtime.transformer.Pipeline;
import ml.combust.mleap.tensor.Tensor;
import scala.collection.JavaConverters;
import scala.util.Try;

public class MleapScore {

    static final class Refusal extends Exception {
        final int status;

        Refusal(int status, String message) {
            super(message);
            this.status = status;
        }
    }

    // Spark's BLAS (used by MLeap's linear models) logs two lines when the JDK's incubating
    // vector module is absent, then uses its plain Java BLAS; keep stderr to our one line.
    static final java.util.logging.Logger NETLIB = java.util.logging.Logger.getLogger("dev.ludovic.netlib");

    public static void main(String[] args) {
        NETLIB.setLevel(java.util.logging.Level.SEVERE);
        try {
            if (args.length == 0 || args.length % 3 != 0) {
                throw new Refusal(
                    2, "usage: MleapScore BUNDLE.zip INPUT.json OUTPUT.json [BUNDLE INPUT OUTPUT ...]");
            }
            // Several bundles in one JVM: its start and this file's compile cost seconds each.
            for (int i = 0; i < args.length; i += 3) {
                run(Path.of(args[i]), Path.of(args[i + 1]), Path.of(args[i + 2]));
            }
        } catch (Refusal r) {
            System.err.println("mleap-score: " + oneLine(r.getMessage()));
            System.exit(r.status);
        } catch (Throwable t) {
            System.err.println("mleap-score: unexpected " + describe(t));
            System.exit(1);
        }
    }

    static void run(Path bundlePath, Path inputPath, Path outputPath) throws Refusal {
        long t0 = System.nanoTime();
        Object input;
        try {
            input = new Json(Files.readString(inputPath, StandardCharsets.UTF_8)).parse();
        } catch (IOException | IllegalArgumentException e) {
            throw new Refusal(2, "cannot read " + inputPath + ": " + describe(e));
        }
        LeapFrameBuilder frames = new LeapFrameBuilder();
        Input parsed = Input.from(input, frames);

        // Loading: MLeap resolves every op and attribute here.
        if (!Files.isRegularFile(bundlePath)) {
            throw new Refusal(2, "no bundle file " + bundlePath);
        }
        MleapContext context = new ContextBuilder().createMleapContext();
        Transformer root;
        String bundleName;
        try {
            // BundleBuilder opens a .zip as "jar:file:/abs/path.zip".
            Bundle<Transformer> bundle =
                new BundleBuilder().load(bundlePath.toAbsolutePath().toFile(), context);
            root = bundle.root();
            bundleName = bundle.info().name();
        } catch (Throwable t) {
            throw new Refusal(3, "MLeap refused the bundle " + bundlePath + ": " + describe(t));
        }
        long t1 = System.nanoTime();
        Transformer last = root;
        if (root instanceof Pipeline) {
            List<Transformer> stages = JavaConverters.seqAsJavaList(((Pipeline) root).transformers());
            if (stages.isEmpty()) {
                throw new Refusal(3, "MLeap refused the bundle " + bundlePath + ": empty pipeline");
            }
            last = stages.get(stages.size() - 1);
        }
        // The model's outputs: port and column name from its node.json, type from MLeap.
        List<String[]> outputs = new ArrayList<>(); // {port, column, type}
        Map<String, DataType> types = new LinkedHashMap<>();
        List<String> ignored = new ArrayList<>();
        try {
            for (StructField f : JavaConverters.seqAsJavaList(last.outputSchema().fields())) {
                types.put(f.name(), f.dataType());
            }
            // A port MLeap's op does not produce (e.g. "probability" on a regressor) is ignored
            // by MLeap; it is listed under "ignored_ports" in the output.
            for (Socket s : JavaConverters.asJavaIterable(last.shape().outputs().values())) {
                DataType dt = types.get(s.name());
                if (dt == null) {
                    ignored.add(s.port());
                    continue;
                }
                String type = dt instanceof TensorType ? "tensor" : dt.base().toString();
                outputs.add(new String[] {s.port(), s.name(), type});
            }
        } catch (Throwable t) {
            throw new Refusal(3, "MLeap refused the bundle " + bundlePath + ": " + describe(t));
        }
        if (outputs.isEmpty()) {
            throw new Refusal(3, "the bundle's last node " + last.uid() + " declares no output that MLeap produces");
        }

        // Scoring the whole frame at once; on failure, find the first row MLeap refuses.
        List<String> columns = new ArrayList<>();
        for (String[] o : outputs) {
            columns.add(o[1]);
        }
        List<Row> scored;
        try {
            scored = transform(root, frames.createFrame(parsed.schema, parsed.rows), columns);
        } catch (Throwable whole) {
            try { // a missing column or a type MLeap cannot cast fails without any rows
                transform(root, frames.createFrame(parsed.schema, List.of()), columns);
            } catch (Throwable schema) {
                throw new Refusal(4, "MLeap refused the input columns: " + describe(schema));
            }
            for (int i = 0; i < parsed.rows.size(); i++) {
                try {
                    transform(root, frames.createFrame(parsed.schema, List.of(parsed.rows.get(i))), columns);
                } catch (Throwable one) {
                    throw new Refusal(4, "MLeap refused row " + i + ": " + describe(one));
                }
            }
            throw new Refusal(4, "MLeap refused the frame: " + describe(whole));
        }

        long t2 = System.nanoTime();
        StringBuilder out = new StringBuilder(64 + 64 * scored.size());
        out.append("{\"bundle\": ").append(Json.quote(bundleName));
        out.append(", \"node\": ").append(Json.quote(last.uid()));
        out.append(", \"transformer\": ").append(Json.quote(last.getClass().getName()));
        out.append(", \"outputs\": [");
        for (int k = 0; k < outputs.size(); k++) {
            String[] o = outputs.get(k);
            out.append(k == 0 ? "" : ", ").append("{\"port\": ").append(Json.quote(o[0]))
                .append(", \"name\": ").append(Json.quote(o[1]))
                .append(", \"type\": ").append(Json.quote(o[2])).append('}');
        }
        out.append("], \"ignored_ports\": [");
        for (int k = 0; k < ignored.size(); k++) {
            out.append(k == 0 ? "" : ", ").append(Json.quote(ignored.get(k)));
        }
        out.append("],\n\"rows\": [");
        for (int i = 0; i < scored.size(); i++) {
            Row row = scored.get(i);
            out.append(i == 0 ? "\n{" : ",\n{");
            for (int k = 0; k < outputs.size(); k++) {
                out.append(k == 0 ? "" : ", ").append(Json.quote(outputs.get(k)[1])).append(": ");
                Json.value(out, row.getRaw(k));
            }
            out.append('}');
        }
        out.append("\n]}\n");
        try {
            Files.writeString(outputPath, out, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new Refusal(2, "cannot write " + outputPath + ": " + describe(e));
        }
        if (System.getenv("MLEAP_SCORE_TIMING") != null) {
            System.err.printf("mleap-score: %d rows; read input + load bundle %d ms, score %d ms, write %d ms%n",
                scored.size(), (t1 - t0) / 1_000_000, (t2 - t1) / 1_000_000, (System.nanoTime() - t2) / 1_000_000);
        }
    }

    /** Runs the root transformer and keeps only `columns`, in order; throws what MLeap fails with. */
    static List<Row> transform(Transformer root, DefaultLeapFrame frame, List<String> columns) throws Throwable {
        Try<DefaultLeapFrame> result = root.transform(frame);
        if (result.isFailure()) {
            throw result.failed().get();
        }
        DefaultLeapFrame selected = new LeapFrameSupport().select(result.get(), columns);
        // collect() forces every row (DefaultLeapFrame's rows may be computed lazily).
        return new ArrayList<>(new LeapFrameSupport().collect(selected));
    }

    /** The input file as an MLeap schema and rows. */
    static final class Input {
        final StructType schema;
        final List<Row> rows = new ArrayList<>();

        private Input(StructType schema) {
            this.schema = schema;
        }

        @SuppressWarnings("unchecked")
        static Input from(Object json, LeapFrameBuilder frames) throws Refusal {
            if (!(json instanceof Map) || !(((Map<String, Object>) json).get("schema") instanceof List)
                || !(((Map<String, Object>) json).get("rows") instanceof List)) {
                throw new Refusal(2, "the input must be an object with a \"schema\" list and a \"rows\" list");
            }
            Map<String, Object> top = (Map<String, Object>) json;
            List<Object> fields = (List<Object>) top.get("schema");
            List<StructField> structFields = new ArrayList<>();
            List<String> kinds = new ArrayList<>();
            List<Boolean> nullable = new ArrayList<>();
            for (Object f : fields) {
                if (!(f instanceof Map) || !(((Map<String, Object>) f).get("name") instanceof String)) {
                    throw new Refusal(2, "each schema entry needs a \"name\" and a \"type\"");
                }
                Map<String, Object> field = (Map<String, Object>) f;
                String name = (String) field.get("name");
                Object type = field.get("type");
                boolean isNullable = !Boolean.FALSE.equals(field.get("nullable"));
                ScalarType dt;
                if ("double".equals(type)) {
                    dt = frames.createDouble(isNullable);
                } else if ("string".equals(type)) {
                    dt = frames.createString(isNullable);
                } else if ("long".equals(type)) {
                    dt = frames.createLong(isNullable);
                } else if ("boolean".equals(type)) {
                    dt = frames.createBoolean(isNullable);
                } else {
                    throw new Refusal(2, "column " + name + ": type " + type + " is not double, string, long or boolean");
                }
                structFields.add(frames.createField(name, dt));
                kinds.add((String) type);
                nullable.add(isNullable);
            }
            Input input;
            try {
                input = new Input(frames.createSchema(structFields));
            } catch (Throwable t) {
                throw new Refusal(2, "bad schema: " + describe(t));
            }
            List<Object> rows = (List<Object>) top.get("rows");
            for (int i = 0; i < rows.size(); i++) {
                if (!(rows.get(i) instanceof List) || ((List<Object>) rows.get(i)).size() != kinds.size()) {
                    throw new Refusal(2, "input row " + i + " is not a list of " + kinds.size() + " values");
                }
                List<Object> raw = (List<Object>) rows.get(i);
                List<Object> values = new ArrayList<>(raw.size());
                for (int k = 0; k < raw.size(); k++) {
                    Object v = raw.get(k);
                    String kind = kinds.get(k);
                    String column = structFields.get(k).name();
                    if (v == null) {
                        if (!nullable.get(k)) {
                            throw new Refusal(2, "input row " + i + ": column " + column + " is not nullable");
                        }
                        values.add(null);
                    } else if (kind.equals("double") && v instanceof Double) {
                        values.add(v);
                    } else if (kind.equals("long") && v instanceof Double && (Double) v == Math.rint((Double) v)) {
                        values.add(((Double) v).longValue());
                    } else if (kind.equals("string") && v instanceof String) {
                        values.add(v);
                    } else if (kind.equals("boolean") && v instanceof Boolean) {
                        values.add(v);
                    } else {
                        throw new Refusal(2, "input row " + i + ": column " + column + " holds " + v + ", not a " + kind);
                    }
                }
                input.rows.add(frames.createRowFromIterable(values));
            }
            return input;
        }
    }

    /** A small JSON reader (objects, lists, strings, numbers as double, booleans, null) and writer. */
    static final class Json {
        private final String s;
        private int i;

        Json(String text) {
            this.s = text;
        }

        Object parse() {
            Object v = read();
            skip();
            if (i != s.length()) {
                throw fail("trailing characters");
            }
            return v;
        }

        private IllegalArgumentException fail(String why) {
            return new IllegalArgumentException("invalid JSON at offset " + i + ": " + why);
        }

        private void skip() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
                i++;
            }
        }

        private Object read() {
            skip();
            if (i >= s.length()) {
                throw fail("unexpected end");
            }
            char c = s.charAt(i);
            if (c == '{') {
                Map<String, Object> m = new LinkedHashMap<>();
                i++;
                skip();
                if (s.charAt(i) == '}') {
                    i++;
                    return m;
                }
                while (true) {
                    skip();
                    if (s.charAt(i) != '"') {
                        throw fail("expected a key");
                    }
                    String key = string();
                    skip();
                    if (s.charAt(i++) != ':') {
                        throw fail("expected ':'");
                    }
                    m.put(key, read());
                    skip();
                    char d = s.charAt(i++);
                    if (d == '}') {
                        return m;
                    }
                    if (d != ',') {
                        throw fail("expected ',' or '}'");
                    }
                }
            }
            if (c == '[') {
                List<Object> l = new ArrayList<>();
                i++;
                skip();
                if (s.charAt(i) == ']') {
                    i++;
                    return l;
                }
                while (true) {
                    l.add(read());
                    skip();
                    char d = s.charAt(i++);
                    if (d == ']') {
                        return l;
                    }
                    if (d != ',') {
                        throw fail("expected ',' or ']'");
                    }
                }
            }
            if (c == '"') {
                return string();
            }
            if (s.startsWith("null", i)) {
                i += 4;
                return null;
            }
            if (s.startsWith("true", i)) {
                i += 4;
                return Boolean.TRUE;
            }
            if (s.startsWith("false", i)) {
                i += 5;
                return Boolean.FALSE;
            }
            if (s.startsWith("NaN", i)) { // Python's json.dumps writes NaN for float('nan')
                i += 3;
                return Double.NaN;
            }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
            if (start == i) {
                throw fail("unexpected character '" + c + "'");
            }
            try {
                return Double.parseDouble(s.substring(start, i)); // correctly rounded
            } catch (NumberFormatException e) {
                throw fail("bad number " + s.substring(start, i));
            }
        }

        private String string() {
            StringBuilder b = new StringBuilder();
            i++; // opening quote
            while (true) {
                if (i >= s.length()) {
                    throw fail("unterminated string");
                }
                char c = s.charAt(i++);
                if (c == '"') {
                    return b.toString();
                }
                if (c != '\\') {
                    b.append(c);
                    continue;
                }
                char e = s.charAt(i++);
                switch (e) {
                    case '"': b.append('"'); break;
                    case '\\': b.append('\\'); break;
                    case '/': b.append('/'); break;
                    case 'b': b.append('\b'); break;
                    case 'f': b.append('\f'); break;
                    case 'n': b.append('\n'); break;
                    case 'r': b.append('\r'); break;
                    case 't': b.append('\t'); break;
                    case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
                    default: throw fail("bad escape \\" + e);
                }
            }
        }

        static String quote(String v) {
            StringBuilder b = new StringBuilder("\"");
            for (char c : v.toCharArray()) {
                if (c == '"' || c == '\\') {
                    b.append('\\').append(c);
                } else if (c < 0x20) {
                    b.append(String.format("\\u%04x", (int) c));
                } else {
                    b.append(c);
                }
            }
            return b.append('"').toString();
        }

        /** A scored value: numbers in Java's round-trip form, tensors as dense lists. */
        static void value(StringBuilder out, Object v) {
            if (v == null) {
                out.append("null");
            } else if (v instanceof Double || v instanceof Float) {
                double d = ((Number) v).doubleValue();
                out.append(Double.isFinite(d) ? Double.toString(d) : "\"" + d + "\"");
            } else if (v instanceof Number || v instanceof Boolean) {
                out.append(v);
            } else if (v instanceof Tensor) {
                Object array = ((Tensor<?>) v).toDense().rawValues();
                if (array instanceof double[]) {
                    double[] a = (double[]) array;
                    out.append('[');
                    for (int k = 0; k < a.length; k++) {
                        if (k > 0) {
                            out.append(", ");
                        }
                        value(out, a[k]);
                    }
                    out.append(']');
                } else {
                    out.append(quote(String.valueOf(v)));
                }
            } else {
                out.append(quote(String.valueOf(v)));
            }
        }
    }

    static String describe(Throwable t) {
        StringBuilder b = new StringBuilder(t.getClass().getSimpleName());
        if (t.getMessage() != null) {
            b.append(": ").append(t.getMessage());
        }
        Throwable cause = t.getCause();
        for (int depth = 0; cause != null && cause != t && depth < 5; depth++) {
            b.append(" <- ").append(cause.getClass().getSimpleName());
            if (cause.getMessage() != null) {
                b.append(": ").append(cause.getMessage());
            }
            t = cause;
            cause = cause.getCause();
        }
        return oneLine(b.toString());
    }

    static String oneLine(String s) {
        return s.replaceAll("\\s*[\\r\\n]+\\s*", " | ");
    }
}
