"""Prepared data cut into parts of bounded size, and put back together byte for byte.

A machine reached through a channel with a per-transfer size limit (the GPU check carries at
most 64 MiB a call) gets the prepared data over several transfers: ``split_parts`` writes
``part-00/``, ``part-01/``... each at most ``max_part_bytes``, every one holding a copy of the
manifest; ``join_parts`` checks every chunk and every whole file against its SHA-256 (the
file's own also against ``meta.json``) before the prepared folder appears, all at once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.data import store
from pipeline.errors import DataError

MANIFEST = "parts.json"
MANIFEST_ROOM = 64 << 10  # bytes kept free in each part for its copy of the manifest


def split_parts(prepared: Path, out: Path, max_part_bytes: int,
                splits: tuple[str, ...] = store.SPLITS) -> list[Path]:
    """Cut meta.json and the files of ``splits`` into parts under ``out`` (replaced whole)."""
    prepared, out = Path(prepared), Path(out)
    if out.resolve() in (prepared.resolve(), *prepared.resolve().parents):
        raise DataError(f"{out}: the parts would replace the prepared data; pick another folder")
    meta = store.load_meta(prepared)
    chunk_bytes = max_part_bytes - MANIFEST_ROOM
    if chunk_bytes <= 0:
        raise DataError(f"max part size {max_part_bytes} bytes: too small for a part")
    names = [store.META] + [f"{split}_{kind}.npy" for split in splits
                            if split in meta["sizes"] for kind in ("images", "labels")]
    manifest = {"dataset": meta["dataset"], "max_part_bytes": max_part_bytes, "files": {}}
    parts: list[list[tuple[str, bytes]]] = [[]]
    room = chunk_bytes
    for name in names:
        data = (prepared / name).read_bytes()
        entry = {"size": len(data), "sha256": _sha256(data), "chunks": []}
        offset = 0
        while offset < len(data) or not entry["chunks"]:
            if room == 0:
                parts.append([])
                room = chunk_bytes
            piece = data[offset:offset + room]
            chunk = f"{name}.{len(entry['chunks']):03d}"
            parts[-1].append((chunk, piece))
            entry["chunks"].append({"part": _part_name(len(parts) - 1), "name": chunk,
                                    "sha256": _sha256(piece)})
            offset += len(piece)
            room -= len(piece)
        manifest["files"][name] = entry
    manifest["parts"] = [_part_name(i) for i in range(len(parts))]
    with store.atomic_directory(out) as scratch:
        for index, chunks in enumerate(parts):
            folder = scratch / _part_name(index)
            folder.mkdir()
            for chunk, piece in chunks:
                (folder / chunk).write_bytes(piece)
            store.write_json(folder / MANIFEST, manifest)
    return [out / name for name in manifest["parts"]]


def join_parts(parts_root: Path, target: Path) -> dict:
    """Rebuild the prepared folder ``target`` from the parts under ``parts_root``; a missing or
    damaged part is a one-line DataError and ``target`` stays as it was."""
    parts_root = Path(parts_root)
    manifests = sorted(parts_root.glob(f"part-*/{MANIFEST}"))
    if not manifests:
        raise DataError(f"{parts_root}: no part-NN/{MANIFEST} found; carry the parts first")
    manifest = json.loads(manifests[0].read_text())
    missing = [p for p in manifest["parts"] if not (parts_root / p / MANIFEST).is_file()]
    if missing:
        raise DataError(f"{parts_root}: {', '.join(missing)} missing of "
                        f"{len(manifest['parts'])} parts; carry them first")
    with store.atomic_directory(Path(target)) as scratch:
        for name, entry in manifest["files"].items():
            digest = hashlib.sha256()
            with open(scratch / name, "wb") as handle:
                for chunk in entry["chunks"]:
                    path = parts_root / chunk["part"] / chunk["name"]
                    try:
                        piece = path.read_bytes()
                    except FileNotFoundError:
                        raise DataError(f"{path}: not found; carry {chunk['part']} again") \
                            from None
                    if _sha256(piece) != chunk["sha256"]:
                        raise DataError(f"{path}: SHA-256 mismatch; carry {chunk['part']} again")
                    digest.update(piece)
                    handle.write(piece)
            if digest.hexdigest() != entry["sha256"]:
                raise DataError(f"{name}: SHA-256 of the joined file does not match the manifest")
        meta = store.load_meta(scratch)
        for name, facts in meta.get("outputs", {}).items():
            if name in manifest["files"] and facts.get("sha256") != manifest["files"][name][
                    "sha256"]:
                raise DataError(f"{name}: does not match meta.json's SHA-256")
    return meta


def _part_name(index: int) -> str:
    return f"part-{index:02d}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
