"""Hypothesis strategies for every request message of the agent, derived from the protobuf descriptors: a field
added to the proto is fuzzed without a change here. Strings that matter (manifests, sha256s) get hostile values."""

from __future__ import annotations

import json
import math

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
_EDGES = [0, 1, -1, 2, 127, 128, 1024, 10**6, 10**9, 2**31 - 1, -(2**31), 2**53, 2**62]


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int = 100_000) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def manifests(sha: str = "", size: int = 0) -> st.SearchStrategy[str]:
    """Manifests of the right shape with one part mistyped, deep or absurd, and plain garbage."""
    good = {
        "schema_version": 1,
        "precision": "fp32",
        "format": "onnx",
        "file": {"name": "model.onnx", "sha256": sha, "size_bytes": size},
    }
    weird = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    )

    @st.composite
    def mutated(draw: st.DrawFn) -> str:
        manifest = json.loads(json.dumps(good))
        path = draw(
            st.sampled_from(
                [
                    ("file",),
                    ("format",),
                    ("precision",),
                    ("file", "sha256"),
                    ("file", "size_bytes"),
                    ("file", "name"),
                    ("schema_version",),
                ]
            )
        )
        target = manifest
        for key in path[:-1]:
            target = target[key]
        if draw(st.booleans()):
            target[path[-1]] = draw(weird)
        else:
            del target[path[-1]]
        return json.dumps(manifest)

    return st.one_of(
        mutated(),
        st.sampled_from(
            [
                json.dumps({**good, "file": "model.onnx"}),
                json.dumps({**good, "format": ["onnx"]}),
                json.dumps({**good, "precision": {"x": 1}}),
                json.dumps({**good, "file": {**good["file"], "size_bytes": 1e308}}),
                json.dumps({**good, "file": {**good["file"], "size_bytes": "12"}}),
                json.dumps(good).replace("1,", "NaN,", 1),
                "[]",
                "null",
                "1",
                '"x"',
                "{",
                "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
                deep_json(),
                deep_object(40_000),
                deep_json(1000),
                json.dumps({**good, "pad": "x" * (300 << 10)}),
            ]
        ),
        st.text(max_size=64),
    )


def interesting_strings(real_sha: str = "") -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=80),
        st.sampled_from(
            [
                "",
                real_sha,
                real_sha.upper(),
                "a" * 64,
                "g" * 64,
                "a" * 63,
                "a" * 65,
                "../../etc/passwd",
                "/etc/passwd",
                "a/../../b",
                "..\\x",
                "x\x00y",
                "n" * 4096,
                "ｍｏｄｅｌ",
                "run id with spaces",
                "-",
                ".",
                "..",
                deep_json(1000),
            ]
        ),
    )


def _scalar(field: FieldDescriptor, real_sha: str, manifest_sha: str, manifest_size: int) -> st.SearchStrategy:
    t = field.type
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.one_of(
            st.floats(allow_nan=True, allow_infinity=True, width=64 if t == FieldDescriptor.TYPE_DOUBLE else 32),
            st.sampled_from([math.nan, math.inf, -math.inf]),
            st.sampled_from([0.0, -0.0, 1e-300, 1e300, 5e-324, 0.01, 1.0, 86400.0, 86400.5, 3600.0]),
        )
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        lo, hi = INT32
    elif t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        lo, hi = INT64
    elif t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        lo, hi = UINT32
    elif t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        lo, hi = UINT64
    elif t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    elif t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-5, 1000), st.integers(*INT32))
    elif t == FieldDescriptor.TYPE_STRING:
        if field.name == "manifest_json":
            return manifests(manifest_sha, manifest_size)
        return interesting_strings(real_sha)
    elif t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=256), st.sampled_from([b"", b"\x00" * 4096, b"\xff" * (1 << 20)]))
    else:
        raise NotImplementedError(f"field {field.full_name} of type {t}")
    edges = [v for v in _EDGES if lo <= v <= hi] + [lo, hi]
    small = st.integers(max(lo, -10), min(hi, 200))
    return st.one_of(small, small, st.sampled_from(edges), st.integers(lo, hi))


def message_strategy(
    descriptor: Descriptor, message_class, *, real_sha: str = "", manifest_size: int = 0, depth: int = 0
) -> st.SearchStrategy:
    """Messages with every field either unset or a random value of its type (nested messages likewise)."""
    fields = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 4:
                continue
            sub_class = message_factory.GetMessageClass(field.message_type)
            value = message_strategy(
                field.message_type, sub_class, real_sha=real_sha, manifest_size=manifest_size, depth=depth + 1
            )
        else:
            value = _scalar(field, real_sha, real_sha, manifest_size)
        if field.is_repeated:
            value = st.lists(value, max_size=3)
        # unset more often than not, so the checks behind the first bad field are reached too
        fields[field.name] = st.one_of(st.none(), st.none(), value)

    def build(values: dict) -> object:
        message = message_class()
        for name, value in values.items():
            if value is None:
                continue
            field = descriptor.fields_by_name[name]
            target = getattr(message, name) if field.is_repeated or field.type == FieldDescriptor.TYPE_MESSAGE else None
            if field.is_repeated:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    @st.composite
    def few(draw: st.DrawFn) -> dict:
        """One or two fields set, the rest unset: every field's own check is reached, not just the first."""
        names = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=2, unique=True)) if fields else []
        return {name: draw(fields[name]) for name in names}

    return st.one_of(st.fixed_dictionaries(fields), few()).map(build)
