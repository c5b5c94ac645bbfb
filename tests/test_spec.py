import pytest

from peftbench.config.spec import RunSpec, apply_overrides, deep_merge, parse_override
from peftbench.errors import SpecError


def test_defaults_resolve_method_learning_rate():
    spec = RunSpec.from_dict({"method": {"name": "ia3"}}).resolved()
    assert spec.train.lr == 5e-3
    spec = RunSpec.from_dict({"method": {"name": "lora"}, "train": {"lr": 2e-4}}).resolved()
    assert spec.train.lr == 2e-4
    assert spec.method.params["r"] == 8


def test_set_overrides_parse_values_as_numbers():
    data = apply_overrides({}, ["method.r=16", "train.lr=2e-4", "data.train=a.csv", "train.group_by_length=true"])
    assert data == {"method": {"r": 16}, "train": {"lr": 2e-4, "group_by_length": True}, "data": {"train": "a.csv"}}


@pytest.mark.parametrize("bad", ["method.r", "=3", "a..b=1"])
def test_malformed_set_is_a_spec_error(bad):
    with pytest.raises(SpecError, match="malformed --set"):
        parse_override(bad)


def test_unknown_keys_are_reported_with_did_you_mean():
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict({"trian": {"lr": 1}})
    assert "unknown key 'trian'" in str(err.value) and "Did you mean: train" in str(err.value)
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict({"train": {"learning_rate": 1}})
    assert "unknown key 'train.learning_rate'" in str(err.value)


def test_unknown_method_key_names_valid_keys_but_peft_keys_pass_through():
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict({"method": {"name": "lora", "rank": 4}})
    assert "method.rank" in str(err.value) and "valid keys" in str(err.value)
    spec = RunSpec.from_dict({"method": {"name": "lora", "use_rslora": True}})
    assert spec.resolved().method.params["use_rslora"] is True


@pytest.mark.parametrize("sets, phrase", [
    (["train.lr=0"], "train.lr"), (["train.lr=-1"], "train.lr"), (["train.epochs=0"], "train.epochs"),
    (["train.batch_size=abc"], "train.batch_size"), (["method.r=0"], "method.r"),
])
def test_non_positive_or_mistyped_values_are_refused(sets, phrase):
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict(apply_overrides({}, sets)).resolved()
    assert phrase in str(err.value)


def test_all_errors_are_reported_together():
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict({"train": {"lr": -1, "epochs": 0}})
    assert "train.lr" in str(err.value) and "train.epochs" in str(err.value)


def test_deep_merge_keeps_sibling_keys():
    base = {"train": {"lr": 1, "weight_decay": 0.1}, "method": {"name": "lora"}}
    merged = deep_merge(base, {"train": {"lr": 2}})
    assert merged["train"] == {"lr": 2, "weight_decay": 0.1}
    assert base["train"]["lr"] == 1  # inputs untouched


def test_run_id_is_stable_and_changes_with_hyperparameters(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("text,label\na,0\n")
    a = RunSpec.from_dict({"data": {"train": str(f)}, "method": {"name": "lora"}})
    b = RunSpec.from_dict({"data": {"train": str(f)}, "method": {"name": "lora", "r": 8}})  # r=8 is the default
    c = RunSpec.from_dict({"data": {"train": str(f)}, "method": {"name": "lora", "r": 16}})
    first = a.run_id()
    assert first == b.run_id()
    assert first != c.run_id()
    f.write_text("text,label\nb,1\n")  # same path, new content: a new run
    assert RunSpec.from_dict({"data": {"train": str(f)}, "method": {"name": "lora"}}).run_id() != first


def test_run_id_follows_the_retention_file_content(tmp_path):
    f, r = tmp_path / "t.csv", tmp_path / "general.csv"
    f.write_text("text,label\na,0\n")
    r.write_text("text\nsome general text\n")
    spec = {"data": {"train": str(f)}, "retention": {"file": str(r), "label_column": None}}
    first = RunSpec.from_dict(spec).run_id()
    assert RunSpec.from_dict(spec).run_id() == first
    r.write_text("text\nother general text\n")  # same path, new content: a new run
    assert RunSpec.from_dict(spec).run_id() != first


def test_run_names_cannot_escape_the_output_folder():
    with pytest.raises(SpecError, match="run name"):
        RunSpec.from_dict({"name": "../evil"})


def test_yaml_spec_round_trip(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("method:\n  name: dora\n  r: 4\ntrain:\n  lr: 1e-4\n")
    spec = RunSpec.from_yaml(p, ["train.epochs=2"])
    assert spec.method.name == "dora" and spec.method.params["r"] == 4
    assert spec.train.lr == 1e-4 and spec.train.epochs == 2


def test_malformed_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("method:\n  name: [lora\n")
    with pytest.raises(SpecError, match=r"malformed YAML .* line"):
        RunSpec.from_yaml(p)


def test_error_messages_stay_on_one_line_whatever_the_input_holds():
    """Messages and hints quote user input (keys, values), which may hold any kind of line break."""
    from peftbench.errors import SpecError

    err = SpecError("key 'grid.\na' is wrong\r\n", hint="write 'grid.\x85a\u2028: [a, b]'")
    assert len(str(err).splitlines()) == 1
    assert str(err) == "key 'grid. a' is wrong (fix: write 'grid. a : [a, b]')"
