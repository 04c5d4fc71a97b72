"""Issue 12: the adversarial corpus is refused by the gates it targets; an honest scheduler passes.

Each corpus file goes through the static gate; what passes the gate is compiled
with the real clang in the compile box and its ELF goes through the object check,
as `schedagent policies verify` does. The host kernel has no sched_ext, so the
compile uses the corpus' stand-in vmlinux.h and the kernel view is built from the
honest object (its kfunc allow-list and its struct sched_ext_ops layout).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from schedagent.errors import (
    CompileError,
    CompileLimitExceeded,
    GateRejection,
    ObjectRejection,
    SchedagentError,
)
from schedagent.kernel import btf, toolchain
from schedagent.policy import allowlist, objcheck
from schedagent.policy.gate import check_source
from tests.adversarial.corpus import HOST_INCLUDE, Case, cases

CASES = cases()
#: What the toolchain passes on a 7.2 kernel (compat_defines() reads them from its BTF).
HOST_FLAGS = [
    *toolchain.CFLAGS,
    "-DSA_HAVE_scx_bpf_dsq_insert=1",
    "-DSA_HAVE_scx_bpf_dsq_insert_vtime=1",
    "-DSA_HAVE_scx_bpf_dsq_move_to_local=1",
    "-DSA_HAVE_scx_bpf_now=1",
    "-DSA_HAVE_scx_bpf_task_set_dsq_vtime=1",
    "-DSA_HAVE_scx_bpf_select_cpu_dfl=1",
    "-DSA_MOVE_TO_LOCAL_NARGS=1",
]
#: Small enough that the macro bomb trips quickly on the host.
HOST_LIMITS = toolchain.CompileLimits(timeout_s=60, cpu_s=40, address_space_bytes=1 << 30)

needs_clang = pytest.mark.skipif(
    shutil.which("clang") is None or not Path("/usr/include/bpf/bpf_helpers.h").exists(),
    reason="needs clang and libbpf-dev on the host: sh scripts/install-host-deps.sh",
)


def _box() -> toolchain.IncludeBox:
    return toolchain.IncludeBox(
        HOST_INCLUDE / "vmlinux.h",
        toolchain.libbpf_headers(),
        toolchain.BPF_INCLUDE_DIR / "schedagent",
    )


def _compile(path: Path, out_dir: Path) -> Path:
    out = out_dir / (path.name.removesuffix(".bpf.c") + ".bpf.o")
    toolchain.build_object(path.read_bytes(), path, out, HOST_FLAGS, _box(), HOST_LIMITS)
    return out


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> objcheck.KernelView:
    """A kernel view with every allowed kfunc and the honest object's ops layout."""
    honest = next(c for c in CASES if c.name == "honest")
    obj = _compile(honest.path, tmp_path_factory.mktemp("kernel"))
    elf_btf = _btf_section(obj)
    table = btf.parse_types(elf_btf)
    layout = table.layout(table.find(btf.OPS_STRUCT, btf.KIND_STRUCT))
    return objcheck.KernelView(allowlist.KFUNCS, layout)


def _btf_section(obj: Path) -> bytes:
    from elftools.elf.elffile import ELFFile

    with obj.open("rb") as handle:
        section = ELFFile(handle).get_section_by_name(".BTF")
        assert section is not None
        return bytes(section.data())


def _verify(case: Case, out_dir: Path, kernel: objcheck.KernelView) -> SchedagentError | None:
    """The gates in the order the engine runs them; the refusal, or None if all pass."""
    try:
        check_source(case.path.read_text(errors="replace"), str(case.path))
        obj = _compile(case.path, out_dir)
        objcheck.check_object(obj, str(case.path), kernel)
    except (GateRejection, CompileError, CompileLimitExceeded, ObjectRejection) as err:
        return err
    return None


def test_every_trick_has_a_corpus_file() -> None:
    names = {c.name for c in CASES}
    assert len(CASES) >= 40 and "honest" in names
    assert all(c.exit_code in (0, 11, 12, 16, 17) for c in CASES)


@needs_clang
@pytest.mark.parametrize("case", [c for c in CASES if c.exit_code], ids=lambda c: c.name)
def test_corpus_file_is_refused_naming_what_was_found(
    case: Case, tmp_path: Path, kernel: objcheck.KernelView
) -> None:
    err = _verify(case, tmp_path, kernel)
    assert err is not None, f"{case.name} passed every gate"
    assert err.exit_code == case.exit_code, str(err)
    assert case.reason in str(err), str(err)


@needs_clang
def test_honest_scheduler_passes_every_gate(tmp_path: Path, kernel: objcheck.KernelView) -> None:
    honest = next(c for c in CASES if c.name == "honest")
    assert check_source(honest.path.read_text()).ops_name == "honest"
    report = objcheck.check_object(_compile(honest.path, tmp_path), "honest", kernel)
    assert report.ops_var == "honest_ops"
    assert set(report.programs) == {
        "honest_select_cpu",
        "honest_enqueue",
        "honest_dispatch",
        "honest_init",
        "honest_exit",
    }
    assert "scx_bpf_dsq_insert" in report.kfuncs and report.maps == ("sa_stats",)
    # the ops members set, read from the link section's relocations (issue 17)
    assert report.ops_members == ("dispatch", "enqueue", "exit", "init", "select_cpu")


@needs_clang
def test_kfunc_missing_from_the_running_kernel_is_refused(
    tmp_path: Path, kernel: objcheck.KernelView
) -> None:
    honest = next(c for c in CASES if c.name == "honest")
    older = objcheck.KernelView(kernel.funcs - {"scx_bpf_create_dsq"}, kernel.ops_layout)
    with pytest.raises(ObjectRejection) as caught:
        objcheck.check_object(_compile(honest.path, tmp_path), "honest", older)
    assert caught.value.rule == "kfunc missing from the running kernel"
    assert "scx_bpf_create_dsq" in caught.value.found


@needs_clang
def test_compile_error_never_quotes_another_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.h"
    secret.write_text("root:$y$j9T$SECRETHASH:19000:0:99999:7:::\n")
    # the gate would refuse this include; the box must hold even without the gate
    src = tmp_path / "leak.bpf.c"
    src.write_text(f'#include "{secret}"\nint x = ;\n')
    with pytest.raises(CompileError) as caught:
        _compile(src, tmp_path)
    text = str(caught.value) + "\n".join(caught.value.diagnostics)
    assert "SECRETHASH" not in text
    assert "more error(s) inside included headers" in text


@needs_clang
def test_compile_box_hides_system_headers(tmp_path: Path) -> None:
    src = tmp_path / "stdio.bpf.c"
    src.write_text("#include <stdio.h>\n")
    with pytest.raises(CompileError) as caught:
        _compile(src, tmp_path)
    assert "'stdio.h' file not found" in caught.value.diagnostics[0]
    assert caught.value.diagnostics[0].startswith(f"{src}:1:")


def test_loader_refuses_an_ops_layout_unlike_the_kernels() -> None:
    from schedagent.kernel.loader import check_ops_member

    check_ops_member("ok", "name", (320, 128), (320, 128), 472)
    with pytest.raises(ObjectRejection) as fake:
        check_ops_member("fake", "name", (1 << 20, 8), (320, 128), 472)
    assert fake.value.rule == "ops layout" and "1048576" in fake.value.found
    with pytest.raises(ObjectRejection) as short:  # kernel offsets past a short value
        check_ops_member("short", "timeout_ms", (296, 4), (296, 4), 200)
    assert "200-byte" in short.value.found


def test_staged_sources_are_capped_and_the_oldest_evicted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from schedagent import services

    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(services, "MAX_STAGED_SOURCES", 3)
    paths = []
    for n in range(5):
        paths.append(Path(services.stage_source(f"// source {n}\n")))
        os.utime(paths[-1], (1000 + n, 1000 + n))  # a strict age order, no sleeps
    assert [p.exists() for p in paths] == [False, False, True, True, True]
    monkeypatch.setattr(services, "MAX_STAGED_BYTES", 50)  # room for 36 new + one 12 old
    newest = Path(services.stage_source("// x" * 9))
    assert newest.exists() and [p.exists() for p in paths][2:] == [False, False, True]


@needs_clang
def test_object_check_refuses_forged_btf_even_without_the_box(
    tmp_path: Path, kernel: objcheck.KernelView
) -> None:
    """The IR check stops asm; the object check must still refuse the object it made."""
    import subprocess

    forge = next(c for c in CASES if c.name == "asm_btf_forge")
    secret = tmp_path / "secret"
    secret.write_text("root:SECRETHASH:19000:0:99999:7:::\n")
    src = tmp_path / "forge.bpf.c"
    src.write_text(forge.path.read_text().replace("/etc/shadow", str(secret)))
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "vmlinux.h").symlink_to(HOST_INCLUDE / "vmlinux.h")
    (inc / "bpf").symlink_to(toolchain.libbpf_headers())
    (inc / "schedagent").symlink_to(toolchain.BPF_INCLUDE_DIR / "schedagent")
    obj = tmp_path / "forge.bpf.o"
    subprocess.run(
        ["clang", *HOST_FLAGS, "-nostdinc", "-isystem", str(inc), "-c", str(src), "-o", str(obj)],
        check=True,
        capture_output=True,
    )
    with pytest.raises(ObjectRejection) as caught:
        objcheck.check_object(obj, "forge", kernel)
    assert caught.value.rule == "malformed BTF"
    assert "SECRETHASH" not in str(caught.value)


def test_ir_check_allows_only_empty_asm_templates() -> None:
    barrier = 'call void asm sideeffect "", "~{memory}"() #3, !srcloc !7\n'
    objcheck.check_ir(barrier + '@s = constant [9 x i8] c"asm \\22x\\22\\00"\n', "ok")
    for ir, found in [
        ('call void asm sideeffect "call 109", "~{r0}"()\n', "bpf_send_signal"),
        ('callbr void asm sideeffect ".incbin \\22/etc/shadow\\22", "!i"()\n', ".incbin"),
        ('module asm ".section .BTF"\n', "file-scope asm"),
        ('@"\\01bpf_send_signal" = external global i32\n', "asm label"),
    ]:
        with pytest.raises(ObjectRejection) as caught:
            objcheck.check_ir(ir, "adv")
        assert caught.value.rule == "inline assembly" and found in caught.value.found
