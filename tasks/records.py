"""Flower records whose arrays stay torch tensors until something needs their bytes.

Flower's `Array` holds `np.save` bytes: building a reply serialises every tensor and reading it
back parses and copies them again, which for a round of 50 pfl_cnn replies is 300+ MB through
NumPy bytes each way. In process nothing needs those bytes. A `TensorArray` is an `Array` (Flower's
own strategies, `isinstance` checks, `ArrayRecord` and `Message` accept it unchanged) that keeps
the tensor on its device and makes `data` on first access, exactly the bytes `Array(tensor)`
would hold. So the `flower` engine, a deployment, a pickle (checkpoint) or a strategy reading
`.data` get the wire format, and the in-process engines never make it:

- `numpy()` copies the tensor to a fresh host array without going through bytes;
- `tensors(record)` hands the tensors themselves to our own code (the clients' `load_state_dict`,
  the FedAvg family's aggregation and the reply screening in strategies/);
- `wire_bytes(record)` is `ArrayRecord.count_bytes()` computed from shapes and dtypes, so the byte
  counts in metrics.jsonl are what the wire would carry, serialised or not.

The batched engine's replies are views into one `[clients, ...]` tensor per name; `stacked(...)`
finds that tensor again, so screening and aggregation run once over the stack.
"""

from __future__ import annotations

import functools
import io
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import SType

_NUMPY_DTYPES: dict[torch.dtype, tuple[np.dtype, str]] = {}  # and the dtype's name, which str() would remake each time


SECAGG_ARRAY_KEYS = "flowerbed.array-keys"  # config key: the arrays' names, which SecAgg+'s legacy Parameters do not carry


def _numpy_dtype(dtype: torch.dtype) -> tuple[np.dtype, str]:
    if dtype not in _NUMPY_DTYPES:
        found = torch.empty(0, dtype=dtype).numpy().dtype
        _NUMPY_DTYPES[dtype] = found, str(found)
    return _NUMPY_DTYPES[dtype]


@functools.lru_cache(maxsize=4096)
def _npy_size(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """Bytes `np.save` writes for an array: the .npy header for this dtype and shape, plus the values."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    out = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(out, header)
    except ValueError:  # a header too long for format 1.0; np.save then writes 2.0
        out = io.BytesIO()
        np.lib.format.write_array_header_2_0(out, header)
    return len(out.getvalue()) + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


class TensorArray(Array):
    """An `Array` backed by a tensor; `data` (the `np.save` bytes) is made on first access."""

    def __init__(self, tensor: torch.Tensor, stack: torch.Tensor | None = None, slot: int | None = None) -> None:
        # Array's own __init__ would serialise; set the fields directly (no dirty-flag bookkeeping needed)
        tensor = tensor.detach()
        dtype, name = _numpy_dtype(tensor.dtype)
        vars(self).update({"dtype": name, "shape": tuple(tensor.shape), "stype": SType.NUMPY,
                           "_tensor": tensor, "_stack": stack, "_slot": slot, "_np_dtype": dtype})

    @property
    def tensor(self) -> torch.Tensor | None:
        """The tensor (on its device), or None once `data` was replaced by other bytes."""
        return vars(self).get("_tensor")

    @property  # type: ignore[override]
    def data(self) -> bytes:
        if "_data" not in vars(self):
            vars(self)["_data"] = Array.from_numpy_ndarray(self.numpy()).data
        return vars(self)["_data"]

    @data.setter
    def data(self, value: bytes) -> None:  # new bytes replace the tensor (Array's own semantics)
        vars(self).update({"_data": value, "_tensor": None, "_stack": None})

    def numpy(self) -> np.ndarray:
        tensor = self.tensor
        if tensor is None:
            return super().numpy()
        host = tensor.cpu()
        array = host.numpy()
        # a fresh C-ordered array, as np.load would give (ascontiguousarray would make 0-d arrays 1-d)
        return array.copy(order="C") if host is tensor or not array.flags.c_contiguous else array

    def wire_size(self) -> int:
        """len(self.data), without making it."""
        return _npy_size(vars(self)["_np_dtype"], self.shape)

    def __reduce__(self):  # pickles (checkpoints) as the plain Array it stands for
        return Array, (self.dtype, self.shape, self.stype, self.data)

    def __deepcopy__(self, memo: dict) -> TensorArray:
        """Shared, not copied: like an Array's bytes, the tensor is never written in place (a client
        loads it into its own model by copy), and copying a message per node must not serialise."""
        return self


TensorArray.__qualname__ = "Array"  # Flower's object store names types by qualname: deflates as an Array


def tensor_record(state: Mapping[str, torch.Tensor], stacks: Mapping[str, torch.Tensor] | None = None,
                  slot: int | None = None) -> ArrayRecord:
    """An ArrayRecord of TensorArrays (no copy: pass tensors the caller will not modify).

    `stacks[name][slot]` is `state[name]` for the batched engine's replies."""
    return filled(ArrayRecord(), ((name, TensorArray(tensor, stacks[name] if stacks else None, slot))
                                  for name, tensor in state.items()))


# Building records. Flower type-checks every entry a record is given (the checks call `typing`
# helpers per value): a fifth of a small model's client call went to them. Where this Flower keeps
# a record's entries in `_data` (1.41, 1.42), entries that are already of an allowed type are
# stored directly; anything else, or another Flower, goes through the record's own checks.
def _storage(record) -> dict | None:
    storage = vars(record).get("_data")
    return storage if isinstance(storage, dict) and not storage else None


def filled(record: ArrayRecord, items: Iterable[tuple[str, Array]]) -> ArrayRecord:
    """An empty `record` with `record[key] = array` for each item (string keys, `Array` values)."""
    items = list(items)
    storage = _storage(record)
    if storage is None or not all(type(k) is str and isinstance(v, Array) for k, v in items):
        for key, array in items:
            record[key] = array
        return record
    storage.update(items)
    record.is_dirty = True
    return record


def metric_record(metrics: Mapping) -> MetricRecord:
    """`MetricRecord(metrics)`: int and float values stored as they are, lists checked by Flower."""
    record = MetricRecord()
    storage = _storage(record)
    for key, value in metrics.items():
        if storage is not None and type(key) is str and type(value) in (int, float):
            storage[key] = value
        else:
            record[key] = value
    return record


def record_dict(records: Mapping) -> RecordDict:
    """`RecordDict(records)` (string keys; ArrayRecord, MetricRecord or ConfigRecord values)."""
    content = RecordDict()
    storage = _storage(content)
    if storage is None or not all(type(k) is str and isinstance(v, (ArrayRecord, MetricRecord, ConfigRecord))
                                  for k, v in records.items()):
        for key, record in records.items():
            content[key] = record
        return content
    storage.update(records)
    return content


def records_of(content: Mapping, kind: type) -> list:
    """The records of type `kind` in a RecordDict, in order. `content.array_records` (and
    `metric_records`) build a synced, type-checked copy on every access: 7 µs, several per reply."""
    return [record for record in content.values() if isinstance(record, kind)]


def shallow_copy(record: ArrayRecord) -> ArrayRecord:
    """A new record holding the same Array objects (`ArrayRecord(dict)` copies them: serialises)."""
    return filled(ArrayRecord(), record.items())


def is_tensor_backed(record: ArrayRecord) -> bool:
    return all(isinstance(v, TensorArray) and v.tensor is not None for v in record.values())


def tensors(record: ArrayRecord) -> OrderedDict[str, torch.Tensor]:
    """The record's arrays as tensors: a TensorArray's own (not a copy: do not modify them), any
    other Array decoded from its bytes (the server makes the round's global record tensor-backed
    once, so the clients of a round do not decode it again each)."""
    out = OrderedDict()
    for name, array in record.items():
        tensor = array.tensor if isinstance(array, TensorArray) else None
        out[name] = tensor if tensor is not None else torch.from_numpy(array.numpy())
    return out


def as_tensor_record(record: ArrayRecord) -> ArrayRecord:
    """The same arrays as a tensor-backed record: once per round on the server."""
    return record if is_tensor_backed(record) else tensor_record(tensors(record))


def wire_bytes(record: ArrayRecord) -> int:
    """`record.count_bytes()` (the serialised arrays plus key lengths) without serialising tensors."""
    return sum((v.wire_size() if isinstance(v, TensorArray) and "_data" not in vars(v) else len(v.data)) + len(k)
               for k, v in record.items())


def snapshot(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """A tensor record of copies of `state` (e.g. a reused model's state_dict, overwritten next call)."""
    return tensor_record(OrderedDict((k, v.detach().clone()) for k, v in state.items()))


def stacked(records: Iterable[ArrayRecord]) -> tuple[dict[str, torch.Tensor], list[int]] | None:
    """If every record's arrays are views into the same `[clients, ...]` tensors (the batched engine's
    replies), those tensors by name and each record's slot; else None."""
    records = list(records)
    if not records or not all(is_tensor_backed(r) for r in records):
        return None
    first = records[0]
    stacks = {k: vars(v)["_stack"] for k, v in first.items()}
    slots = []
    for record in records:
        if record.keys() != first.keys():
            return None
        slot = None
        for k, v in record.items():
            if vars(v)["_stack"] is not stacks[k] or stacks[k] is None or (slot is not None and vars(v)["_slot"] != slot):
                return None
            slot = vars(v)["_slot"]
        slots.append(slot)
    return stacks, slots


def readdressed(message: Message, node_id: int) -> Message:
    """A copy of an instruction message (the same content object, the same metadata but for the
    destination) sent to `node_id`, without `Message(...)`'s checks of every argument (12 µs):
    a Message and its Metadata keep their fields in `__dict__`."""
    metadata = object.__new__(type(message.metadata))
    vars(metadata).update(vars(message.metadata), _dst_node_id=node_id)
    copy = object.__new__(type(message))
    vars(copy).update(vars(message), _metadata=metadata)
    return copy
