"""A thin ctypes binding to the system libbpf (>= 1.2).

Only the calls the loader needs are bound. libbpf runs in its 1.0 mode: a
failing call returns NULL or a negative errno and sets ``errno``. Every message
libbpf prints, the verifier log included, is captured through
``libbpf_set_print`` so a rejection can be reported with the log's tail.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from functools import lru_cache

from schedagent.errors import FeatureMissing

MIN_VERSION = (1, 2)
#: the observer (BTF tracepoints, a task iterator, batch map reads) needs no more than 1.0
OBSERVER_MIN_VERSION = (1, 0)

BPF_MAP_TYPE_STRUCT_OPS = 26

PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

_lock = threading.Lock()
_captured: list[str] = []


def _print_to_log(level: int, fmt: bytes | None, args: int | None) -> int:
    # On x86-64 a va_list argument arrives as a pointer; vsnprintf takes it as is.
    buf = ctypes.create_string_buffer(4096)
    libc().vsnprintf(buf, ctypes.sizeof(buf), fmt, ctypes.c_void_p(args))
    _captured.append(buf.value.decode(errors="replace"))
    if len(_captured) > 20000:
        del _captured[:10000]
    return 0


# libbpf keeps this pointer: it must live as long as the module (a ctypes thunk).
_on_print = PRINT_FN(_print_to_log)


@lru_cache(maxsize=1)
def libc() -> ctypes.CDLL:
    """The C library, loaded once, with errno kept for ``ctypes.get_errno()``."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    return libc


def _sig(lib: ctypes.CDLL, name: str, restype: object, *argtypes: object) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


def lib() -> ctypes.CDLL:
    """libbpf for sched_ext schedulers (1.2 or newer), with the print hook installed."""
    return lib_at_least(MIN_VERSION)


def lib_at_least(minimum: tuple[int, int]) -> ctypes.CDLL:
    """libbpf, refused with ``FeatureMissing`` when it is older than ``minimum``."""
    handle = _load()
    version = (handle.libbpf_major_version(), handle.libbpf_minor_version())
    if version < minimum:
        raise FeatureMissing(
            f"libbpf >= {minimum[0]}.{minimum[1]}",
            f"the system libbpf is version {version[0]}.{version[1]}",
            "install libbpf 1.2 or newer (Debian 13 or unstable's libbpf1)",
        )
    return handle


@lru_cache(maxsize=1)
def _load() -> ctypes.CDLL:
    """Load libbpf, declare the signatures used, and install the print hook."""
    path = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        handle = ctypes.CDLL(path, use_errno=True)
    except OSError as err:
        raise FeatureMissing(
            "libbpf", f"cannot load {path}: {err}", "apt-get install libbpf1 (version 1.2 or newer)"
        ) from err
    vp, cp, i, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
    for name, res, args in (
        ("libbpf_major_version", ctypes.c_uint32, ()),
        ("libbpf_minor_version", ctypes.c_uint32, ()),
        ("libbpf_set_print", vp, (PRINT_FN,)),
        ("bpf_object__open_file", vp, (cp, vp)),
        ("bpf_object__load", i, (vp,)),
        ("bpf_object__close", None, (vp,)),
        ("bpf_object__btf", vp, (vp,)),
        ("bpf_object__next_map", vp, (vp, vp)),
        ("bpf_object__find_map_by_name", vp, (vp, cp)),
        ("bpf_map__name", cp, (vp,)),
        ("bpf_map__type", i, (vp,)),
        ("bpf_map__fd", i, (vp,)),
        ("bpf_map__value_size", ctypes.c_uint32, (vp,)),
        ("bpf_map__key_size", ctypes.c_uint32, (vp,)),
        ("bpf_map__initial_value", vp, (vp, ctypes.POINTER(sz))),
        ("bpf_map__attach_struct_ops", vp, (vp,)),
        ("bpf_map__lookup_elem", i, (vp, vp, sz, vp, sz, ctypes.c_uint64)),
        ("bpf_map__update_elem", i, (vp, vp, sz, vp, sz, ctypes.c_uint64)),
        ("bpf_map__delete_elem", i, (vp, vp, sz, ctypes.c_uint64)),
        ("bpf_link__destroy", i, (vp,)),
        ("bpf_link__fd", i, (vp,)),
        ("btf__raw_data", vp, (vp, ctypes.POINTER(ctypes.c_uint32))),
        ("bpf_map__btf_value_type_id", ctypes.c_uint32, (vp,)),
        ("libbpf_num_possible_cpus", i, ()),
        ("bpf_object__next_program", vp, (vp, vp)),
        ("bpf_program__name", cp, (vp,)),
        ("bpf_program__fd", i, (vp,)),
        ("bpf_program__attach", vp, (vp,)),
        ("bpf_iter_create", i, (i,)),
        ("bpf_enable_stats", i, (i,)),
        ("bpf_map_lookup_elem", i, (i, vp, vp)),
        ("bpf_map_update_elem", i, (i, vp, vp, ctypes.c_uint64)),
        ("bpf_map_delete_elem", i, (i, vp)),
        ("bpf_map_lookup_batch", i, (i, vp, vp, vp, vp, ctypes.POINTER(ctypes.c_uint32), vp)),
    ):
        _sig(handle, name, res, *args)
    handle.libbpf_set_print(_on_print)
    return handle


def version() -> str:
    """libbpf's version as 'major.minor'."""
    handle = _load()
    return f"{handle.libbpf_major_version()}.{handle.libbpf_minor_version()}"


def capture() -> None:
    """Start capturing libbpf's messages afresh, with our print hook (re)installed.

    libbpf's print hook is process-wide, and other users of the same libbpf in this
    process replace it: bcc's BTF loader sets it to NULL when it is not debugging,
    after which a verifier rejection would come back with an empty log.
    """
    handle = _load()
    handle.libbpf_set_print(_on_print)
    take_messages()


def take_messages() -> list[str]:
    """Return and clear libbpf's captured messages."""
    with _lock:
        out = list(_captured)
        _captured.clear()
    return out


def last_errno(ret: int | None = None) -> int:
    """errno of the last failing call (or ``-ret`` when a negative code is given)."""
    if ret is not None and ret < 0:
        return -ret
    return ctypes.get_errno() or 1


def errno_text(err: int) -> str:
    """``'EBUSY (Device or resource busy)'`` style text for an errno."""
    import errno as errno_mod

    return f"{errno_mod.errorcode.get(err, str(err))} ({os.strerror(err)})"
