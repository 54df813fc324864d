"""The JVM artifacts the project runs with: fetched at set-up, pinned by checksum, never fetched
at run time.

Each set is a folder under `jvm/` in the repository with a `pom.xml` (what to fetch) and a
`jars.sha256` (every file the set is made of, with its SHA-256). `make` runs
`python -m jobs.jars fetch`, which has this machine's Maven copy the pom's artifacts into a
scratch folder, checks each file against `jars.sha256`, and only then moves the set into the
JAR cache (`PRECOMPUTE_JARS_DIR`). A job that needs a set and finds it incomplete fails at once,
saying what to run.

- `delta`: delta-spark and delta-storage for Spark 4.2 and Scala 2.13, on every Spark session's
  `spark.jars` (Spark ships them to the executors of a cluster itself).
- `mleap`: MLeap's own runtime, run in a JVM of its own to check that our bundles score the same
  there (`precompute model verify`).

After changing a pom, `python -m jobs.jars pin SET` rewrites its `jars.sha256` from what Maven
fetched.

One JAR is built, not fetched: `jvm/profile/` holds the Spark aggregate that profiles a batch
(`jobs.profiles`), compiled by `fetch` with the JDK's `javac` against the installed PySpark's own
JARs (so it always matches the Spark it runs in) into `<jars dir>/profile/`, and rebuilt when its
source or PySpark changes. It goes on `spark.jars` beside Delta Lake's.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from precompute.errors import PrecomputeError
from precompute.settings import Settings, get_settings, project_root

SETS = ("delta", "mleap")
CHECKSUMS = "jars.sha256"
PROFILE = "profile"  # the built JAR's folder, in `jvm/` and in the cache


class JarsMissing(PrecomputeError):
    """A JAR set the job needs is not in the cache, or does not match its checksums."""


@dataclass(frozen=True)
class JarSet:
    """One set: where its pom and checksums are, and where its files are cached."""

    name: str
    source: Path  # jvm/<name>/ in the repository
    cache: Path  # <jars dir>/<name>/

    @property
    def pinned(self) -> dict[str, str]:
        """File name -> SHA-256, as the repository pins them."""
        pins = {}
        for line in (self.source / CHECKSUMS).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                digest, name = line.split()
                pins[name] = digest
        return pins

    def files(self) -> list[Path]:
        """The cached files of the set, in pinned order; refuses an incomplete set."""
        paths = [self.cache / name for name in self.pinned]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise JarsMissing(
                f"the {self.name} JARs are not in {self.cache} (missing {', '.join(missing[:3])}"
                f"{'…' if len(missing) > 3 else ''}): run `make setup` "
                f"(or `python -m jobs.jars fetch`) to fetch them"
            )
        return paths


def jar_set(name: str, settings: Settings) -> JarSet:
    return JarSet(name, project_root() / "jvm" / name, settings.jars_dir / name)


def fetch(jars: JarSet) -> str:
    """Make the cache hold exactly the pinned files; fetch with Maven only when it does not."""
    pinned = jars.pinned
    cached = [jars.cache / name for name in pinned]
    if all(p.is_file() and _sha256(p) == pinned[p.name] for p in cached):
        return f"{jars.name}: {len(pinned)} JARs already in {jars.cache}"
    with tempfile.TemporaryDirectory(dir=_scratch_parent(jars)) as scratch:
        fetched = _maven_copy(jars, Path(scratch))
        problems = []
        for name, digest in pinned.items():
            if name not in fetched:
                problems.append(f"{name} was not fetched")
            elif _sha256(fetched[name]) != digest:
                problems.append(f"{name} does not match its pinned SHA-256")
        extra = sorted(set(fetched) - set(pinned))
        if extra:
            problems.append(f"Maven fetched files not pinned: {', '.join(extra)}")
        if problems:
            raise JarsMissing(
                f"the {jars.name} JARs from {jars.source / 'pom.xml'} do not match "
                f"{jars.source / CHECKSUMS}: {'; '.join(problems)}"
            )
        if jars.cache.exists():
            shutil.rmtree(jars.cache)
        jars.cache.parent.mkdir(parents=True, exist_ok=True)
        Path(scratch, "out").rename(jars.cache)
    return f"{jars.name}: fetched {len(pinned)} JARs into {jars.cache}"


def pin(jars: JarSet) -> str:
    """Rewrite the set's checksums from what its pom fetches now (after a version change)."""
    with tempfile.TemporaryDirectory() as scratch:
        fetched = _maven_copy(jars, Path(scratch))
        lines = [f"{_sha256(path)}  {name}" for name, path in sorted(fetched.items())]
    (jars.source / CHECKSUMS).write_text("\n".join(lines) + "\n")
    return f"{jars.name}: pinned {len(lines)} JARs in {jars.source / CHECKSUMS}"


def _maven_copy(jars: JarSet, scratch: Path) -> dict[str, Path]:
    out = scratch / "out"
    if shutil.which("mvn") is None:
        raise JarsMissing("Maven (`mvn`) is not installed: `make setup` installs it with apt")
    command = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(jars.source / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={out}",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stdout + done.stderr).strip().splitlines()
        first = next((line for line in detail if "ERROR" in line), detail[-1] if detail else "")
        raise JarsMissing(f"Maven could not fetch the {jars.name} JARs: {first.strip()}")
    return {p.name: p for p in sorted(out.glob("*.jar"))}


def _scratch_parent(jars: JarSet) -> Path:
    # Next to the cache, so the finished set is moved into place by a rename.
    jars.cache.parent.mkdir(parents=True, exist_ok=True)
    return jars.cache.parent


def profile_jar(settings: Settings) -> Path:
    """The built profile aggregate's JAR; refuses one that is missing, or was built from other
    source or against another PySpark."""
    jar = settings.jars_dir / PROFILE / "precompute-profile.jar"
    stamp = jar.with_suffix(".sha256")
    if not jar.is_file() or not stamp.is_file() or stamp.read_text().strip() != _profile_digest():
        raise JarsMissing(
            f"the profile aggregate in {jar} is missing, or was built from other source than "
            f"{project_root() / 'jvm' / PROFILE} or against another PySpark: "
            "run `make setup` (or `python -m jobs.jars fetch`) to build it"
        )
    return jar


def build_profile(settings: Settings) -> str:
    """Compile jvm/profile/*.java against the installed PySpark's JARs, unless already built."""
    try:
        return f"{PROFILE}: built already, {profile_jar(settings)}"
    except JarsMissing:
        pass
    javac = shutil.which("javac")
    if javac is None:
        raise JarsMissing(
            "`javac` (a JDK) is not installed: `make setup` installs openjdk-17-jdk-headless"
        )
    import pyspark  # heavy, and only the build needs where its JARs are

    classpath = Path(pyspark.__file__).parent / "jars" / "*"
    jar = settings.jars_dir / PROFILE / "precompute-profile.jar"
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=jar.parent) as scratch:
        classes = Path(scratch, "classes")
        # No -Werror: a newer JDK's javac adds lint categories (serial fields of Scala types
        # from JDK 18 on) that would fail a build that runs the same.
        command = [javac, "--release", "17", "-Xlint:all,-path,-serial"]
        command += ["-cp", str(classpath), "-d", str(classes), *map(str, _profile_sources())]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise JarsMissing(f"javac could not build {PROFILE}: {done.stderr.strip()}")
        built = Path(scratch, jar.name)
        with zipfile.ZipFile(built, "w", zipfile.ZIP_DEFLATED) as out:
            out.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
            for path in sorted(classes.rglob("*.class")):
                out.write(path, path.relative_to(classes).as_posix())
        built.replace(jar)
    jar.with_suffix(".sha256").write_text(_profile_digest() + "\n")
    return f"{PROFILE}: built {jar}"


def _profile_sources() -> list[Path]:
    return sorted((project_root() / "jvm" / PROFILE).glob("*.java"))


def _profile_digest() -> str:
    """What the built JAR must match: its sources and the PySpark it was compiled against."""
    digest = hashlib.sha256(f"pyspark {version('pyspark')}\n".encode())
    for path in _profile_sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    usage = "usage: python -m jobs.jars fetch [SET ...] | pin SET ..."
    if not argv or argv[0] not in ("fetch", "pin"):
        print(usage, file=sys.stderr)
        return 2
    settings = get_settings()
    names = argv[1:] or list(SETS)
    unknown = sorted(set(names) - set(SETS))
    if unknown:
        print(f"error: unknown JAR set {', '.join(unknown)} (sets: {', '.join(SETS)})")
        return 2
    try:
        for name in names:
            action = fetch if argv[0] == "fetch" else pin
            print(action(jar_set(name, settings)))
        if argv[0] == "fetch" and not argv[1:]:
            print(build_profile(settings))
    except PrecomputeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
