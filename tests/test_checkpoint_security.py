"""Checkpoint folders from elsewhere: confined to their folder, sized before they are built, corrupt files named.

A downloaded checkpoint is untrusted input. Every file its config names (and
every file tfplm opens in it) must resolve, symlinks followed, inside the
folder; its sizes must agree with its tensors before any model is allocated;
a truncated or corrupt file is one `CheckpointError` naming it.
"""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tfplm.models import BertClassifier, BertEncoder, pretrained
from tfplm.models.checkpoints import CheckpointError
from tfplm.models.checkpoints.common import inside
from tfplm.tokenizers import BertPreprocessor, WordPieceTokenizer

from test_checkpoints import WORDPIECE_VOCAB, fixture, tiny_bert, write_google_checkpoint

OUTSIDE = r"is outside the checkpoint folder; a checkpoint may only name files inside its folder"


@pytest.fixture
def tfplm_dir(tmp_path):
    """A tfplm checkpoint (tiny BERT with its vocab.txt), and a copy of its weights outside it."""
    directory = tmp_path / "ckpt"
    tiny_bert(preprocessor=BertPreprocessor(WordPieceTokenizer(WORDPIECE_VOCAB), seq_length=8)).save_pretrained(directory)
    (tmp_path / "outside").mkdir()
    shutil.copy(directory / pretrained.WEIGHTS_FILE, tmp_path / "outside" / pretrained.WEIGHTS_FILE)
    return directory


def edit_spec(directory, change):
    path = directory / pretrained.FORMAT_FILE
    spec = json.loads(path.read_text())
    change(spec)
    path.write_text(json.dumps(spec))


def hf_copy(tmp_path, name="hf"):
    directory = tmp_path / name
    shutil.copytree(fixture("hf_bert"), directory)
    return directory


# --- confinement ---------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["../outside/model.safetensors", "ABSOLUTE", "sub/../../outside/model.safetensors"])
def test_tfplm_weights_outside_the_folder_are_refused(tfplm_dir, weights):
    weights = str(tfplm_dir.parent / "outside" / pretrained.WEIGHTS_FILE) if weights == "ABSOLUTE" else weights
    edit_spec(tfplm_dir, lambda spec: spec.update(weights=weights))
    with pytest.raises(CheckpointError) as error:
        BertEncoder.from_pretrained(tfplm_dir)
    assert str(error.value) == (
        f"{tfplm_dir}: tfplm_config.json key 'weights' {weights!r} is outside the checkpoint folder; a checkpoint "
        "may only name files inside its folder: copy the file into the folder and name it relative to it"
    )


def test_tfplm_weights_may_be_another_name_inside_the_folder(tfplm_dir):
    os.rename(tfplm_dir / pretrained.WEIGHTS_FILE, tfplm_dir / "renamed.safetensors")
    edit_spec(tfplm_dir, lambda spec: spec.update(weights="renamed.safetensors"))
    assert BertEncoder.from_pretrained(tfplm_dir).vocab_size == len(WORDPIECE_VOCAB)


def test_tokenizer_files_do_not_reveal_whether_a_file_outside_exists(tfplm_dir, tmp_path):
    (tmp_path / "secret").write_text("id_rsa")
    messages = []
    for name in ["../secret", "../no_such_file"]:
        edit_spec(tfplm_dir, lambda spec: spec["tokenizer"].update(files=[name]))
        with pytest.raises(CheckpointError, match=OUTSIDE) as error:
            BertEncoder.from_pretrained(tfplm_dir)
        messages.append(str(error.value).replace(name, "NAME"))
    assert messages[0] == messages[1]


def test_a_symlink_in_the_folder_to_a_file_outside_is_refused(tfplm_dir):
    os.remove(tfplm_dir / pretrained.WEIGHTS_FILE)
    os.symlink(tfplm_dir.parent / "outside" / pretrained.WEIGHTS_FILE, tfplm_dir / pretrained.WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match=r"key 'weights' 'model.safetensors' " + OUTSIDE):
        BertEncoder.from_pretrained(tfplm_dir)
    os.symlink(tfplm_dir.parent / "outside", tfplm_dir / "linked")  # a symlinked folder
    edit_spec(tfplm_dir, lambda spec: spec.update(weights="linked/model.safetensors"))
    with pytest.raises(CheckpointError, match=r"'linked/model.safetensors' " + OUTSIDE):
        BertEncoder.from_pretrained(tfplm_dir)


def test_a_symlink_that_stays_in_the_folder_is_followed(tfplm_dir):
    os.rename(tfplm_dir / pretrained.WEIGHTS_FILE, tfplm_dir / "real.safetensors")
    os.symlink("real.safetensors", tfplm_dir / pretrained.WEIGHTS_FILE)
    assert BertEncoder.from_pretrained(tfplm_dir).vocab_size == len(WORDPIECE_VOCAB)


def test_hugging_face_shard_maps_outside_the_folder_are_refused(tmp_path):
    directory = hf_copy(tmp_path)
    (tmp_path / "outside").mkdir()
    os.rename(directory / "model.safetensors", tmp_path / "outside" / "model.safetensors")
    names = load_file(tmp_path / "outside" / "model.safetensors")
    index = {"metadata": {}, "weight_map": {name: "../outside/model.safetensors" for name in names}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json weight_map\['[^']+'\] '../outside/model.safetensors' " + OUTSIDE):
        BertEncoder.from_pretrained(directory)


def test_hugging_face_shards_inside_the_folder_load(tmp_path):
    directory = hf_copy(tmp_path)
    tensors = load_file(directory / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, directory / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    os.remove(directory / "model.safetensors")
    loaded = BertEncoder.from_pretrained(directory)
    expected = BertEncoder.from_pretrained(fixture("hf_bert"))
    for a, b in zip(loaded.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_hugging_face_vocab_linked_to_a_file_outside_is_refused(tmp_path):
    directory = hf_copy(tmp_path)
    (tmp_path / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    os.remove(directory / "vocab.txt")
    os.symlink(tmp_path / "id_rsa", directory / "vocab.txt")
    with pytest.raises(CheckpointError, match=r"file 'vocab.txt' " + OUTSIDE):
        BertEncoder.from_pretrained(directory)


def test_a_hugging_face_hub_cache_snapshot_loads_through_its_blob_links(tmp_path):
    # The hub cache keeps each file once under blobs/; a snapshot links to them.
    repo = tmp_path / "models--tiny--bert"
    snapshot = repo / "snapshots" / "0123abc"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, path in enumerate(sorted(fixture("hf_bert").iterdir())):
        shutil.copy(path, repo / "blobs" / f"blob{i}")
        os.symlink(f"../../blobs/blob{i}", snapshot / path.name)
    loaded = BertEncoder.from_pretrained(snapshot)
    expected = BertEncoder.from_pretrained(fixture("hf_bert"))
    for a, b in zip(loaded.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_google_checkpoint_file_naming_a_checkpoint_outside_is_refused(tmp_path):
    elsewhere, directory = tmp_path / "elsewhere", tmp_path / "uncased_bert"
    write_google_checkpoint(fixture("hf_bert"), elsewhere)
    directory.mkdir()
    shutil.copy(elsewhere / "bert_config.json", directory)
    for path in ("ABSOLUTE", "../elsewhere/bert_model.ckpt"):
        path = str(elsewhere / "bert_model.ckpt") if path == "ABSOLUTE" else path
        (directory / "checkpoint").write_text(f'model_checkpoint_path: "{path}"\n')
        with pytest.raises(
            CheckpointError,
            match=r"the 'checkpoint' file's model_checkpoint_path '../elsewhere/bert_model.ckpt' " + OUTSIDE,
        ):
            BertEncoder.from_pretrained(directory)


def test_a_google_checkpoint_file_naming_its_own_latest_checkpoint_loads(tmp_path):
    directory = tmp_path / "uncased_bert"
    write_google_checkpoint(fixture("hf_bert"), directory)
    for file in directory.glob("bert_model.ckpt.*"):
        file.rename(directory / file.name.replace("bert_model.ckpt", "model.ckpt-1000"))
    for file in directory.glob("model.ckpt-1000.*"):  # an older checkpoint, unreadable: only the state file says which
        (directory / file.name.replace("1000", "500")).write_bytes(file.read_bytes()[:100])
    (directory / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-1000"\n')
    assert BertEncoder.from_pretrained(directory).vocab_size == 800


def test_inside_accepts_names_in_the_folder_and_refuses_escapes(tmp_path):
    assert inside(str(tmp_path), "a/b.txt", "k") == os.path.join(str(tmp_path), "a/b.txt")
    for name in ["/etc/passwd", "..", "../x", "a/../../x", "", "a\0b", 5, None]:
        with pytest.raises(CheckpointError, match="k"):
            inside(str(tmp_path), name, "k")


# --- sizes, before anything is allocated -------------------------------------------------


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("vocab_size", 10**12, r"config vocab_size=1000000000000 but tensor 'embedding/token_embedding/embeddings' has shape \(13, 16\)"),
        ("vocab_size", 20_000_000, r"config vocab_size=20000000 but tensor"),
        ("max_length", 10**9, r"config max_length=1000000000 but tensor 'embedding/position_embedding/embeddings'"),
        ("hidden_size", 4096, r"config hidden_size=4096 but tensor"),
        ("num_layers", 10**6, r"config num_layers=1000000 but the checkpoint has 2 blocks"),
        ("num_heads", 3, r"hidden_size=16 is not divisible by num_heads=3"),
        ("vocab_size", "13", r"config vocab_size='13'; expected a positive integer"),
        ("num_layers", -1, r"config num_layers=-1; expected a positive integer"),
    ],
)
def test_config_sizes_are_checked_against_the_tensors_before_building(tfplm_dir, key, value, message):
    edit_spec(tfplm_dir, lambda spec: spec["config"].update({key: value}))
    with pytest.raises(CheckpointError, match=message):
        BertEncoder.from_pretrained(tfplm_dir)


def test_a_size_whose_tensor_is_missing_is_bounded_by_the_weights(tfplm_dir):
    weights = load_file(tfplm_dir / pretrained.WEIGHTS_FILE)
    del weights["embedding/type_embedding/embeddings"]
    save_file(weights, tfplm_dir / pretrained.WEIGHTS_FILE)
    edit_spec(tfplm_dir, lambda spec: spec["config"].update(type_vocab_size=10**11))
    with pytest.raises(CheckpointError, match=r"describes a model of [\d,]+ parameters but the checkpoint holds [\d,]+ weights"):
        BertEncoder.from_pretrained(tfplm_dir)


def test_hugging_face_config_sizes_are_checked_against_the_tensors(tmp_path):
    directory = hf_copy(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["vocab_size"] = 10**12
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config vocab_size=1000000000000 but tensor .* vocab_size=800"):
        BertEncoder.from_pretrained(directory)


def test_a_classifier_num_classes_must_match_its_tensor(tfplm_dir, tmp_path):
    encoder = BertEncoder.from_pretrained(tfplm_dir)
    BertClassifier(encoder, 3).save_pretrained(tmp_path / "classifier")
    edit_spec(tmp_path / "classifier", lambda spec: spec["config"].update(num_classes=10**9))
    with pytest.raises(CheckpointError, match=r"num_classes=1000000000 but the classifier tensor .* shape \(16, 3\)"):
        BertClassifier.from_pretrained(tmp_path / "classifier")


@pytest.mark.parametrize("seq_length", [25, 10**9])
def test_a_saved_seq_length_longer_than_the_positions_is_refused(tfplm_dir, seq_length):
    edit_spec(tfplm_dir, lambda spec: spec["preprocessor"].update(seq_length=seq_length))
    with pytest.raises(
        CheckpointError, match=rf"seq_length={seq_length} is longer than the model's max_length=24 positions; use a seq_length of at most 24"
    ):
        BertEncoder.from_pretrained(tfplm_dir)


def test_a_seq_length_longer_than_the_positions_is_refused_when_loading_and_building(tfplm_dir):
    with pytest.raises(CheckpointError, match=r"seq_length=1024 is longer than the model's max_length=24"):
        BertEncoder.from_pretrained(tfplm_dir, seq_length=1024)
    preprocessor = BertPreprocessor(WordPieceTokenizer(WORDPIECE_VOCAB), seq_length=25)
    with pytest.raises(ValueError, match=r"seq_length=25 is longer than the model's max_length=24"):
        tiny_bert(preprocessor=preprocessor)
    encoder = tiny_bert()
    with pytest.raises(ValueError, match=r"seq_length=25 is longer than the model's max_length=24"):
        BertClassifier(encoder, 2, preprocessor=preprocessor)
    assert tiny_bert(preprocessor=BertPreprocessor(WordPieceTokenizer(WORDPIECE_VOCAB), seq_length=24)).max_length == 24


# --- corrupt files -----------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5])
def test_a_truncated_safetensors_file_is_named(tfplm_dir, tmp_path, keep):
    hf = hf_copy(tmp_path)
    for path in (tfplm_dir / pretrained.WEIGHTS_FILE, hf / "model.safetensors"):
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
        with pytest.raises(CheckpointError, match=rf"{path}: cannot be read as safetensors .*truncated or corrupt"):
            BertEncoder.from_pretrained(path.parent)


def test_a_truncated_google_checkpoint_is_named(tmp_path):
    directory = tmp_path / "uncased_bert"
    write_google_checkpoint(fixture("hf_bert"), directory)
    (data,) = directory.glob("bert_model.ckpt.data-*")
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"bert_model.ckpt: cannot read the TensorFlow checkpoint .*truncated or corrupt"):
        BertEncoder.from_pretrained(directory)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\udcff"])
def test_a_config_that_is_not_a_json_object_is_named(tfplm_dir, text):
    (tfplm_dir / pretrained.FORMAT_FILE).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(CheckpointError, match=rf"{tfplm_dir / pretrained.FORMAT_FILE}: (not a JSON file|expected a JSON object)"):
        BertEncoder.from_pretrained(tfplm_dir)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda spec: spec.update(class_name=["BertEncoder"]), r"unknown model class \['BertEncoder'\]"),
        (lambda spec: spec.update(config=5), r"key 'config' is 5; expected a JSON object"),
        (lambda spec: spec.update(tokenizer={"class_name": "Evil"}), r"unknown tokenizer class 'Evil'"),
        (lambda spec: spec["tokenizer"].update(files="vocab.txt"), r"'files' is 'vocab.txt'; expected a list"),
        (lambda spec: spec.update(weights=7), r"key 'weights' is 7; expected the name of a file"),
    ],
)
def test_a_malformed_tfplm_config_is_one_clear_error(tfplm_dir, change, message):
    edit_spec(tfplm_dir, change)
    with pytest.raises(CheckpointError, match=message):
        BertEncoder.from_pretrained(tfplm_dir)


def test_an_unreadable_checkpoint_state_file_falls_back_to_the_only_checkpoint(tmp_path):
    directory = tmp_path / "uncased_bert"
    write_google_checkpoint(fixture("hf_bert"), directory)
    for file in directory.glob("bert_model.ckpt.*"):
        file.rename(directory / file.name.replace("bert_model.ckpt", "model.ckpt-7"))
    (directory / "checkpoint").write_text("this is not a checkpoint state\n")
    assert BertEncoder.from_pretrained(directory).vocab_size == 800


# --- keras-nlp presets: keras-hub builds and reads them, so they are checked first ------------


@pytest.fixture
def keras_preset(tmp_path):
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=24
    )
    backbone.save_to_preset(str(tmp_path / "preset"))
    return tmp_path / "preset"


def test_a_keras_preset_file_linked_outside_its_folder_is_refused(keras_preset, tmp_path):
    shutil.move(keras_preset / "model.weights.h5", tmp_path / "model.weights.h5")
    os.symlink(tmp_path / "model.weights.h5", keras_preset / "model.weights.h5")
    with pytest.raises(CheckpointError, match=r"file 'model.weights.h5' " + OUTSIDE):
        BertEncoder.from_pretrained(keras_preset)


def test_a_keras_preset_config_larger_than_its_weight_files_is_refused_before_keras_hub_builds_it(keras_preset):
    assert BertEncoder.from_pretrained(keras_preset).vocab_size == 50
    config = json.loads((keras_preset / "config.json").read_text())
    config["config"]["vocabulary_size"] = 10**12
    (keras_preset / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"its config describes a model of [\d,]+ parameters but its weight files hold [\d,]+ bytes"):
        BertEncoder.from_pretrained(keras_preset)


@pytest.mark.parametrize("module", ["tfplm.models.checkpoints.common", "tfplm.models.presets", "tfplm.models.base"])
def test_docstring_examples_run_as_written(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
