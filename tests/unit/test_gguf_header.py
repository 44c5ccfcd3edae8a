"""The fast GGUF header reader against the gguf package's own GGUFReader, on files made by its writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFEndian, GGUFReader, GGUFWriter, LlamaFileType
from gguf.constants import GGML_QUANT_SIZES

from providers.common.gguf_header import FILE_TYPES, GGML_TYPES, ArrayInfo, read_gguf, read_header
from providers.errors import ModelAccessError


def _write(path: Path, *, vocab: int, tensors: int, endian: GGUFEndian = GGUFEndian.LITTLE) -> Path:
    writer = GGUFWriter(str(path), "llama", endianess=endian)
    writer.add_name("synthetic")
    writer.add_context_length(4096)
    writer.add_file_type(LlamaFileType.MOSTLY_Q8_0)
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    writer.add_token_scores([float(i) for i in range(vocab)])
    writer.add_token_merges([f"t o{i}" for i in range(vocab // 2)])
    writer.add_chat_template("{{ messages }}")
    writer.add_array("test.nested", [[1, 2], [3, 4, 5]])
    writer.add_float64("test.f64", 0.5)
    writer.add_bool("test.flag", True)
    rng = np.random.default_rng(0)
    for i in range(tensors):
        shape = (int(rng.integers(1, 5)) * 32, int(rng.integers(1, 4)))
        writer.add_tensor(f"blk.{i}.weight", rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def big_vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("gguf") / "big-vocab.gguf", vocab=200_000, tensors=300)


@pytest.fixture(scope="module")
def big_endian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("gguf") / "big-endian.gguf", vocab=1000, tensors=20, endian=GGUFEndian.BIG)


def _same_as_the_reference(path: Path) -> None:
    header = read_header(path)
    reference = GGUFReader(path, "r")
    assert set(header.metadata) == set(reference.fields)
    for key, field in reference.fields.items():
        ours = header.metadata[key]
        if isinstance(ours, ArrayInfo):
            # GGUFReader flattens nested arrays; the top-level count is checked by the tests that write one
            if ours.element_type != 9:
                assert len(ours) == len(field.data), key
        else:
            assert ours == pytest.approx(field.contents()), key
    assert [(t.name, t.offset, t.n_bytes, t.n_elements, t.type_id) for t in header.tensors] == [
        (t.name, int(t.data_offset), int(t.n_bytes), int(t.n_elements), int(t.tensor_type)) for t in reference.tensors]
    assert header.parameters == sum(int(t.n_elements) for t in reference.tensors)
    assert header.data_end == path.stat().st_size


def test_the_real_model_reads_as_the_reference_reads_it(demo_model: Path) -> None:
    _same_as_the_reference(demo_model)
    header = read_header(demo_model)
    assert (header.parameters, header.file_type_name, header.get("llama.context_length")) == (134_515_008, "Q4_1", 8192)
    assert len(header.get("tokenizer.ggml.tokens")) == 49152


def test_a_200k_token_vocabulary_and_300_tensors(big_vocab: Path) -> None:
    _same_as_the_reference(big_vocab)
    header = read_header(big_vocab)
    assert len(header.get("tokenizer.ggml.tokens")) == 200_000 and len(header.get("tokenizer.ggml.merges")) == 100_000
    assert len(header.get("test.nested")) == 2 and header.get("test.flag") is True


def test_a_big_endian_file(big_endian: Path) -> None:
    _same_as_the_reference(big_endian)
    header = read_header(big_endian)
    assert header.byte_order == "big" and header.get("general.name") == "synthetic"


def test_a_file_cut_at_any_section_boundary_is_refused(big_endian: Path, tmp_path: Path) -> None:
    whole = big_endian.read_bytes()
    header = read_header(big_endian)
    first = header.tensors[0]
    cuts = {
        "inside the magic": 2, "inside the counts": 12, "after the counts": 24,
        "inside the metadata": header.metadata_end // 2, "after the metadata": header.metadata_end,
        "inside the tensor index": (header.metadata_end + header.index_end) // 2,
        "after the tensor index": header.index_end, "at the data": header.data_offset,
        "inside the first tensor": first.offset + first.n_bytes // 2, "one byte short": len(whole) - 1,
    }
    for where, size in cuts.items():
        cut = tmp_path / f"cut-{size}.gguf"
        cut.write_bytes(whole[:size])
        with pytest.raises(ModelAccessError) as info:
            read_gguf(cut)
        assert "truncated" in info.value.message or "not a GGUF file" in info.value.message, where


def test_a_corrupt_length_is_refused_not_followed(demo_model: Path, tmp_path: Path) -> None:
    data = bytearray(demo_model.read_bytes()[:4096])
    data[24:32] = (2**62).to_bytes(8, "little")  # the first key's length
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(bytes(data))
    with pytest.raises(ModelAccessError, match="truncated or corrupt"):
        read_gguf(broken)


def test_the_type_tables_match_the_gguf_package() -> None:
    assert GGML_TYPES == {t.value: (t.name, *GGML_QUANT_SIZES[t]) for t in GGMLQuantizationType}
    assert FILE_TYPES == {t.value: t.name.removeprefix("MOSTLY_") for t in LlamaFileType}
