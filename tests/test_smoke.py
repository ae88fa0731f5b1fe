from conftest import needs_fer


def test_tiny_checkpoint_loads(tiny_checkpoint):
    from fer_core import FerClassifier

    clf = FerClassifier.from_checkpoint(tiny_checkpoint)
    assert clf.class_names[0] == "angry" and clf.img_size == 48
