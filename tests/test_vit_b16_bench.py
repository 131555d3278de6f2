"""`lab bench` times ViT-B/16's shape (224 px, 14x14 grid, width 768): the paper-scale cost per image."""
import pytest

from lab import bench
from lab.models.adapters import get_adapter


@pytest.mark.slow
def test_bench_reports_a_vit_b16_shaped_row_per_image():
    label, model, inputs = bench.vit_b16_setup(batch=2)
    assert get_adapter(model).grid == (14, 14) and model.config.hidden_size == 768
    assert model.config.num_hidden_layers == 12 and inputs["pixel_values"].shape == (2, 3, 224, 224)
    rows = bench.bench_model(label, model, inputs, ["raw_attention"], repeat=1)
    assert [r["method"] for r in rows] == ["(forward+backward)", "raw_attention"]
    assert all(r["model"] == "vit-b16-224px" and r["s_per_example"] > 0 for r in rows)
