"""Operator traces for disputes: record one step's aten ops, and referee one op.

DESIGN.md, "Data flow" 5.3 (Verde level 3). :class:`OpTracer` records a step;
:class:`OpTrace` serializes canonically and commits to a Merkle root;
:func:`referee` finds the first op where two traces part, checks their
dataflow links, and re-executes that one op (device or strict mode).
"""

from ree.optrace._recorder import OpTracer, batch_tree, storage_span
from ree.optrace._records import (
    OPTRACE_FORMAT,
    Link,
    OpRecord,
    OpTrace,
    OpTraceError,
    TensorIn,
    tensor_hash,
)
from ree.optrace._referee import (
    CHALLENGER,
    DEFENDER,
    Divergence,
    Finding,
    LinkFailure,
    Verdict,
    check_header,
    check_links,
    find_divergence,
    referee,
)
from ree.optrace._replay import (
    check_inputs,
    load_op_inputs,
    rebuild_inputs,
    reexecute,
    resolve_op,
    save_op_inputs,
)

__all__ = [
    "CHALLENGER",
    "DEFENDER",
    "OPTRACE_FORMAT",
    "Divergence",
    "Finding",
    "Link",
    "LinkFailure",
    "OpRecord",
    "OpTrace",
    "OpTraceError",
    "OpTracer",
    "TensorIn",
    "Verdict",
    "batch_tree",
    "check_header",
    "check_inputs",
    "check_links",
    "find_divergence",
    "load_op_inputs",
    "rebuild_inputs",
    "reexecute",
    "referee",
    "resolve_op",
    "save_op_inputs",
    "storage_span",
    "tensor_hash",
]
