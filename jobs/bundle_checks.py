"""What a bundle made elsewhere must meet to be registered against a data contract.

Every problem is collected, not only the first: an op or attribute the runtime does not run,
an input the contract does not declare or declares with a type that does not fit, a nullable
column read by a step that refuses nulls, a task or class count the contract's label cannot
have. Each is one line naming the node or column, so a user fixes them all in one go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jobs.bundle.format import Bundle, BundleError, Node
from jobs.bundle.program import ATTRIBUTES, SUPPORTED_OPS, build_program, check_attributes
from jobs.bundle.steps import Input, Program
from precompute.contracts import Column, Contract

NUMERIC_TYPES = ("long", "double", "boolean")


@dataclass(frozen=True)
class Checked:
    """The outcome: the program when the bundle builds, and every problem found."""

    program: Program | None
    classes: tuple[str, ...] | None
    problems: tuple[str, ...]


def check_against_contract(
    bundle: Bundle, contract: Contract, classes: tuple[str, ...] | None = None
) -> Checked:
    """All the reasons `bundle` could not score rows of `contract` (empty when it can)."""
    problems = [*_op_problems(bundle)]
    program = None
    if not problems:
        try:
            program = build_program(bundle)
        except BundleError as exc:  # a structural problem: sizes, trees, ports
            problems.append(str(exc))
    inputs = program.inputs if program is not None else _scanned_inputs(bundle)
    problems += _input_problems(inputs, contract, nulls_known=program is not None)
    named = None
    if program is not None:
        # Named classes say the model predicts its own target, not necessarily the contract's
        # label (a tier model on the churn contract's inputs): the label then is no guide.
        problems += _label_problems(program, contract) if classes is None else []
        if program.task == "classification":
            named, problem = class_names(program.num_classes, contract.label, classes)
            problems += [problem] if problem else []
        elif classes is not None:
            problems.append(
                f"--classes names classes, but the model ({program.model_op}) is a regressor"
            )
    elif classes is not None:
        named = classes
    return Checked(program, named, tuple(problems))


def class_names(
    num_classes: int, label: Column | None, given: tuple[str, ...] | None
) -> tuple[tuple[str, ...] | None, str | None]:
    """A classifier's class names in class-index order, and a problem if they do not fit:
    the names given, else the label's `allowed` values sorted when there are as many (the order
    scikit-learn, XGBoost's and LightGBM's wrappers and our own training give classes), else
    false/true for a boolean label, else "0".."K-1" (the label indices Spark's classifiers are
    trained on: Spark's StringIndexer orders by frequency, so name a Spark model's classes)."""
    if given is not None:
        if len(given) != num_classes:
            return None, f"--classes names {len(given)} classes, but the model has {num_classes}"
        if len(set(given)) != len(given):
            return None, f"--classes names a class twice: {', '.join(given)}"
        return given, None
    if label is not None and label.allowed and len(label.allowed) == num_classes:
        return tuple(sorted(label.allowed)), None
    if label is not None and label.type == "boolean" and num_classes == 2:
        return ("false", "true"), None
    return tuple(str(k) for k in range(num_classes)), None


def _op_problems(bundle: Bundle) -> list[str]:
    problems = []
    for node in _all_nodes(bundle.nodes):
        if node.op not in ATTRIBUTES:
            problems.append(
                f"node {node.name!r} uses op {node.op!r}, which the runtime does not support "
                f"(supported: {', '.join(SUPPORTED_OPS)})"
            )
            continue
        try:
            check_attributes(node)  # the runtime's own rule (numbered labels_array_i included)
        except BundleError as exc:
            problems.append(str(exc))
    return problems


def _all_nodes(nodes: tuple[Node, ...]) -> list[Node]:
    found = []
    for node in nodes:
        found.append(node)
        found += _all_nodes(tuple(node.children.values()))  # a forest's trees
    return found


def _scanned_inputs(bundle: Bundle) -> tuple[Input, ...]:
    """The columns the bundle reads from a batch, when it does not build into a program (an
    unsupported op): read by some node, written by none before it. A string indexer reads
    strings, every other op numbers; whether nulls are handled is not known then."""
    written: set[str] = set()
    found: dict[str, Input] = {}
    for node in bundle.nodes:
        for port in node.inputs:
            if port.name not in written and port.name not in found:
                kind: Literal["numeric", "string"] = (
                    "string" if node.op == "string_indexer" else "numeric"
                )
                found[port.name] = Input(port.name, kind, nulls_allowed=True)
        written.update(port.name for port in node.outputs)
    return tuple(found.values())


def _input_problems(
    inputs: tuple[Input, ...], contract: Contract, *, nulls_known: bool
) -> list[str]:
    declared = {c.name: c for c in contract.features}
    problems = []
    for column in inputs:
        feature = declared.get(column.name)
        if feature is None:
            problems.append(
                f"input {column.name!r} is not a feature of contract {contract.ref} "
                f"(its features: {', '.join(declared)})"
            )
            continue
        wanted = ("string",) if column.kind == "string" else NUMERIC_TYPES
        fits = feature.type in wanted
        if not fits:
            want = "strings" if column.kind == "string" else "numbers"
            problems.append(
                f"input {column.name!r} is read as {want}, but contract {contract.ref} "
                f"declares it {feature.type}"
            )
        elif nulls_known and feature.nullable and not column.nulls_allowed:
            problems.append(
                f"input {column.name!r} may be null under contract {contract.ref}, but the "
                "bundle reads it without an imputer (or a keep-invalid indexer) in front, so a "
                "null would fail scoring"
            )
    return problems


def _label_problems(program: Program, contract: Contract) -> list[str]:
    label = contract.label
    if label is None:
        return []
    if program.task == "regression" and label.type not in ("long", "double"):
        return [
            f"the model ({program.model_op}) does regression, but contract {contract.ref}'s "
            f"label {label.name!r} is {label.type}"
        ]
    if program.task == "classification":
        if label.type == "boolean" and program.num_classes != 2:
            return [
                f"the model ({program.model_op}) has {program.num_classes} classes, but "
                f"contract {contract.ref}'s label {label.name!r} is boolean (a model of another "
                "target: name its classes with --classes)"
            ]
        if label.allowed and program.num_classes > len(label.allowed):
            return [
                f"the model ({program.model_op}) has {program.num_classes} classes, but "
                f"contract {contract.ref}'s label {label.name!r} allows "
                f"{len(label.allowed)}: {', '.join(label.allowed)}"
            ]
    return []
