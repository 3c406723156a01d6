"""Every endpoint over a real published folder (TestClient, no network)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.artifacts import current_model, get_model, publish_policy
from pipeline.augment import Policy
from pipeline.data.decode import DecodeReport, decode_image
from pipeline.errors import ConfigError
from pipeline.train import normalise
from service.app import serve
from service.published import Published
from service.settings import load_settings

from ..publishing import (
    CLASSES,
    FINGERPRINT,
    RUN_ID,
    add_model,
    add_policy,
    tiny_config,
    tiny_policy,
)
from .conftest import TestClient, image_bytes

PNG = b"\x89PNG\r\n\x1a\n"


def detail(response: object) -> str:
    """The one-line error message of a 4xx/5xx answer."""
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"detail"} and isinstance(body["detail"], str)
    assert "\n" not in body["detail"] and "Traceback" not in body["detail"]
    return str(body["detail"])


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


# ------------------------------------------------------------------------------ nothing yet


def test_nothing_published_is_503_with_what_to_run(tmp_path: Path, make_client: Callable[..., TestClient]) -> None:
    client = make_client(tmp_path / "published")
    assert client.get("/healthz").json() == {"status": "ok"}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("get", "/readyz", {}), ("get", "/policy", {}), ("get", "/model", {}), ("get", "/model/weights", {}),
        ("post", "/predict", {"files": files(("a.png", image_bytes()))}),
        ("post", "/augment", {"files": {"image": ("a.png", image_bytes(), "image/png")}}),
    ]
    for method, url, kwargs in requests:
        response = getattr(client, method)(url, **kwargs)
        assert response.status_code == 503, url
        assert "published yet" in detail(response) and "dvc repro" in detail(response), url
    assert client.get("/policies").json() == {"current": None, "policies": []}
    assert client.get("/models").json() == {"current": None, "models": []}
    page = client.get("/")
    assert page.status_code == 503 and "Nothing published yet" in page.text and "dvc repro" in page.text
    # an explicit policy needs nothing published
    response = client.post("/augment", files={"image": ("a.png", image_bytes(), "image/png")},
                           data={"policy": tiny_policy().to_json()})
    assert response.status_code == 200 and response.content.startswith(PNG)


def test_broken_pointer_is_503_not_a_traceback(published: Path, client: TestClient) -> None:
    (published / "current.json").write_text(json.dumps({"policy": 1, "model": 4}))
    response = client.get("/model")
    assert response.status_code == 503
    assert "names model version 4" in detail(response) and "run publish again" in detail(response)
    assert client.get("/policy").status_code == 200  # the policy pointer is fine


def test_broken_published_files_are_503_not_500_or_422(published: Path, client: TestClient) -> None:
    current = json.loads((published / "current.json").read_text())
    policy_dir = published / "policies" / f"{current['policy']:04d}"
    (policy_dir / "policy.json").write_text('{"sub_policies": "not a list"}')
    # a published policy that is not one is the server's fault (503), not the caller's (422)
    for response in (client.get("/policy"), client.get(f"/policies/{current['policy']}"),
                     client.post("/augment", files={"image": ("a.png", image_bytes(), "image/png")})):
        assert response.status_code == 503, response.request.url
        assert detail(response).startswith(f"published folder: policy version {current['policy']}:")
    meta_path = published / "models" / f"{current['model']:04d}" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["params"]
    meta_path.write_text(json.dumps(meta))
    for url in ("/model", "/models"):
        response = client.get(url)
        assert response.status_code == 503, url
        assert detail(response) == f"published folder: model version {current['model']}: {meta_path} has no 'params'"


# ------------------------------------------------------------------------------ policy


def test_policy_with_provenance_and_etag(published: Path, client: TestClient) -> None:
    response = client.get("/policy")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 1 and body["current"] is True
    assert body["fingerprint"] == FINGERPRINT and body["mlflow_run_id"] == RUN_ID
    assert body["published_at"].endswith("+00:00") and body["summary"]["score"] == 0.8
    assert Policy.from_dict(body["policy"]) == tiny_policy()
    assert body["grid_url"].endswith("/policies/1/grid.png")
    etag = response.headers["etag"]
    assert etag == body["etag"] and etag.startswith('"policy-1-') and response.headers["cache-control"] == "no-cache"

    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = client.get("/policy", headers={"If-None-Match": header})
        assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
    assert client.get("/policy", headers={"If-None-Match": '"policy-0-x"'}).status_code == 200

    add_policy(published, magnitude=0.9)  # a new policy: the old tag no longer matches
    fresh = client.get("/policy", headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.json()["version"] == 2 and fresh.headers["etag"] != etag


def test_a_version_superseded_after_it_was_fetched_is_not_304(published: Path, client: TestClient) -> None:
    first = client.get("/policies/1")
    assert first.json()["current"] is True
    add_policy(published, magnitude=0.9)  # version 1 is no longer the current policy
    again = client.get("/policies/1", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 200 and again.json()["current"] is False
    assert again.headers["etag"] != first.headers["etag"]
    assert client.get("/policies/1", headers={"If-None-Match": again.headers["etag"]}).status_code == 304


def test_policy_history_and_versions(published: Path, client: TestClient) -> None:
    add_policy(published, magnitude=0.9, grid=False)
    history = client.get("/policies").json()
    assert history["current"] == 2 and [p["version"] for p in history["policies"]] == [2, 1]
    assert [p["current"] for p in history["policies"]] == [True, False]
    old = client.get("/policies/1")
    assert old.status_code == 200 and old.json()["current"] is False
    assert Policy.from_dict(old.json()["policy"]) == tiny_policy(0.5)
    assert client.get("/policies/1", headers={"If-None-Match": old.headers["etag"]}).status_code == 304

    missing = client.get("/policies/99")
    assert missing.status_code == 404 and detail(missing) == "policy version 99 is not published (published: 1-2)"
    for bad in ("0", "abc"):
        response = client.get(f"/policies/{bad}")
        assert response.status_code == 422 and detail(response).startswith("path parameter 'version'")


def test_policy_grid_stored_or_rendered(published: Path, client: TestClient) -> None:
    stored = client.get("/policies/1/grid.png")
    assert stored.headers["content-type"] == "image/png"
    assert stored.content == (published / "policies" / "0001" / "grid.png").read_bytes()
    add_policy(published, grid=False)  # no grid published: the service draws one
    drawn = client.get("/policies/2/grid.png")
    assert drawn.status_code == 200 and drawn.content.startswith(PNG)
    assert Image.open(io.BytesIO(drawn.content)).size[0] > 32 * 8
    assert client.get("/policies/2/grid.png").content == drawn.content  # deterministic
    assert client.get("/policies/7/grid.png").status_code == 404


# ------------------------------------------------------------------------------ model


def test_model_metadata(published: Path, client: TestClient) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    body = response.json()
    record = current_model(published)
    assert record is not None
    assert body["version"] == 1 and body["config"] == tiny_config() and body["classes"] == CLASSES
    assert body["params"] == record.meta["params"] > 0 and body["macs"] == record.meta["macs"] > 0
    assert body["metrics"]["test_accuracy"] == 0.5 and body["metrics"]["per_class_accuracy"]["cat"] == 0.5
    assert body["metrics"]["tta"] == "flip" and body["metrics"]["latency_ms"] == 1.5  # open-ended metrics kept
    assert body["fingerprint"] == FINGERPRINT and body["lineage"]["mlflow_run_ids"]["retrain"] == RUN_ID
    assert body["weights"]["exported"] is True and body["weights"]["url"].endswith("/model/weights")
    assert client.get("/model", headers={"If-None-Match": response.headers["etag"]}).status_code == 304
    models = client.get("/models").json()
    assert models["current"] == 1 and models["models"][0]["test_accuracy"] == 0.5


def test_weights_download_loads_in_plain_pytorch(published: Path, client: TestClient) -> None:
    record = get_model(published, 1)
    response = client.get("/model/weights")
    assert response.status_code == 200 and "autoaug-model-v1.pt2" in response.headers["content-disposition"]
    assert response.content == (published / "models" / "0001" / "model.pt2").read_bytes()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = record.load()(normalise(images, channels_last=False))
        exported = torch.export.load(io.BytesIO(response.content)).module()
        torch.testing.assert_close(exported(images.float() / 255), expected, atol=1e-5, rtol=1e-4)
    assert client.get("/model/weights", headers={"If-None-Match": response.headers["etag"]}).status_code == 304

    state = client.get("/model/weights?format=state_dict")
    assert state.status_code == 200
    loaded = torch.load(io.BytesIO(state.content), weights_only=True)
    assert loaded.keys() == record.load().state_dict().keys()
    assert client.get("/model/weights?format=onnx").status_code == 422

    add_model(published, seed=1, export=False)  # a champion without model.pt2
    missing = client.get("/model/weights")
    assert missing.status_code == 404 and "format=state_dict" in detail(missing) and "export=False" in detail(missing)


# ------------------------------------------------------------------------------ predict


def test_predict_any_format_and_size_like_the_ingest(published: Path, make_client: Callable[..., TestClient]) -> None:
    client = make_client(published, precision="fp32")  # exactly the fp32 reference below
    uploads = {
        "small.png": image_bytes((32, 32)),
        "wide.jpg": image_bytes((64, 48), fmt="JPEG", seed=1),
        "grey.png": image_bytes((40, 40), mode="L", seed=2),
        "alpha.webp": image_bytes((20, 30), mode="RGBA", fmt="WEBP", seed=3),
    }
    response = client.post("/predict?top_k=3", files=files(*uploads.items()))
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == 1 and [p["filename"] for p in body["predictions"]] == list(uploads)

    # the same answer as decoding with the ingest's conversion and running the model directly
    record = get_model(published, 1)
    decoded = [decode_image(data, name, DecodeReport()) for name, data in uploads.items()]
    pixels = np.stack([d for d in decoded if d is not None])
    batch = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    with torch.no_grad():
        probabilities = record.load()(normalise(batch, channels_last=False)).softmax(1)
    for prediction, expected in zip(body["predictions"], probabilities, strict=True):
        top = prediction["top"]
        assert len(top) == 3 and [c["probability"] for c in top] == sorted((c["probability"] for c in top), reverse=True)
        assert [c["index"] for c in top] == expected.topk(3).indices.tolist()
        assert [c["label"] for c in top] == [CLASSES[i] for i in expected.topk(3).indices.tolist()]
        assert top[0]["probability"] == pytest.approx(expected.max().item(), abs=1e-6)

    capped = client.post("/predict?top_k=50", files=files(("a.png", image_bytes())))
    assert len(capped.json()["predictions"][0]["top"]) == len(CLASSES)
    assert sum(c["probability"] for c in capped.json()["predictions"][0]["top"]) == pytest.approx(1.0, abs=1e-5)


def test_predict_bad_input(published: Path, make_client: Callable[..., TestClient]) -> None:
    client = make_client(published, max_files=2, max_file_bytes=20_000, max_image_pixels=100 * 100)
    good = ("ok.png", image_bytes())
    cases = [
        (files(("notes.txt", b"not an image at all")), 415, "file 'notes.txt' is not an image"),
        (files(("empty.png", b"")), 400, "file 'empty.png' is empty"),
        (files(good, good, good), 413, "3 files sent; at most 2 per request"),
        (files(("big.bmp", image_bytes((90, 90), fmt="BMP"))), 413, "file 'big.bmp' is larger than"),
        (files(("huge.png", image_bytes((120, 100)))), 413, "image 'huge.png' is 120x100 pixels"),
        (files(good, ("broken.jpg", image_bytes(fmt="JPEG")[:40])), 415, "file 'broken.jpg' is not an image"),
    ]
    for upload, status, message in cases:
        response = client.post("/predict", files=upload)
        assert response.status_code == status, message
        assert detail(response).startswith(message), detail(response)
    missing = client.post("/predict")
    assert missing.status_code == 422 and detail(missing) == "missing form field 'files'"
    wrong_field = client.post("/predict", files={"image": ("a.png", image_bytes(), "image/png")})
    assert wrong_field.status_code == 422 and detail(wrong_field) == "missing form field 'files'"
    bad_k = client.post("/predict?top_k=0", files=files(good))
    assert bad_k.status_code == 422 and detail(bad_k).startswith("query parameter 'top_k'")


def test_predict_refuses_what_pil_calls_a_bomb(
    published: Path, make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # past twice PIL's own MAX_IMAGE_PIXELS, Image.open itself refuses: too large (413), not 415
    client = make_client(published, max_image_pixels=10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    response = client.post("/predict", files=files(("bomb.png", image_bytes((60, 60)))))
    assert response.status_code == 413
    assert detail(response).startswith("image 'bomb.png' is too large to decode")


def test_request_body_limit(published: Path, make_client: Callable[..., TestClient]) -> None:
    client = make_client(published, max_files=1, max_file_bytes=1000)  # body limit: 1000 B + 1 MiB
    too_big = b"x" * (2 << 20)
    response = client.post("/predict", files=files(("a.png", too_big)))
    assert response.status_code == 413 and detail(response).startswith("request body is larger than")

    def chunks() -> object:  # no Content-Length: the limit applies while the body streams in
        for _ in range(40):
            yield b"y" * 65536

    chunked = client.post("/predict", content=chunks(),  # type: ignore[arg-type]
                          headers={"Content-Type": "multipart/form-data; boundary=zzz"})
    assert chunked.status_code == 413 and detail(chunked).startswith("request body is larger than")


# ------------------------------------------------------------------------------ augment


def grid_size(images: int, draws: int, scale: int = 4, padding: int = 2) -> tuple[int, int]:
    return (1 + draws) * (32 * scale + padding) + padding, images * (32 * scale + padding) + padding


def test_augment(published: Path, client: TestClient) -> None:
    image = {"image": ("photo.jpg", image_bytes((50, 60), fmt="JPEG"), "image/jpeg")}
    response = client.post("/augment?draws=3&seed=1", files=image)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-policy-version"] == "1"
    assert Image.open(io.BytesIO(response.content)).size == grid_size(1, 3)
    assert client.post("/augment?draws=3&seed=1", files=image).content == response.content
    assert client.post("/augment?draws=3&seed=2", files=image).content != response.content

    identity = Policy([[("Identity", 1.0, 0.0)]]).to_json()
    own = client.post("/augment?draws=2", files=image, data={"policy": identity})
    assert own.status_code == 200 and own.headers["x-policy-version"] == "request"
    tiles = np.asarray(Image.open(io.BytesIO(own.content)).convert("RGB"))
    first, second = tiles[2:130, 2:130], tiles[2:130, 132:260]
    assert np.array_equal(first, second)  # the identity policy leaves the image as it was

    add_policy(published, magnitude=0.9)
    old = client.post("/augment?version=1", files=image)
    assert old.status_code == 200 and old.headers["x-policy-version"] == "1"
    assert client.post("/augment", files=image).headers["x-policy-version"] == "2"


def test_augment_bad_input(client: TestClient) -> None:
    image = {"image": ("a.png", image_bytes(), "image/png")}
    cases = [
        ({"data": {"policy": "{not json"}}, 422, "policy is not valid JSON"),
        ({"data": {"policy": json.dumps({"version": 1, "sub_policies": [[["Warp", 0.5, 0.5]]]})}}, 422,
         "policy: sub-policy 0, op 0: unknown op 'Warp'"),
        ({"data": {"policy": json.dumps({"version": 1, "sub_policies": [[["Rotate", 1.5, 0.5]]]})}}, 422,
         "policy: sub-policy 0, op 0: probability 1.5 is outside [0, 1]"),
        ({"data": {"policy": tiny_policy().to_json()}, "params": {"version": 1}}, 400, "send either a policy"),
        ({"params": {"version": 5}}, 404, "policy version 5 is not published"),
        ({"params": {"draws": 99}}, 422, "query parameter 'draws'"),
    ]
    for kwargs, status, message in cases:
        response = client.post("/augment", files=image, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, message
        assert detail(response).startswith(message), detail(response)
    for name, data, status, message in [("x.txt", b"hello", 415, "file 'x.txt' is not an image"),
                                        ("e.png", b"", 400, "file 'e.png' is empty")]:
        response = client.post("/augment", files={"image": (name, data, "text/plain")})
        assert response.status_code == status and detail(response).startswith(message)
    assert detail(client.post("/augment")) == "missing form field 'image'"


# ------------------------------------------------------------------------------ hot switch


def test_new_champion_without_restart(published: Path, client: TestClient) -> None:
    assert client.get("/readyz").json() == {"status": "ready", "model_version": 1, "policy_version": 1}
    first = client.post("/predict", files=files(("a.png", image_bytes())))
    assert first.json()["model_version"] == 1

    add_model(published, seed=5, classes=["cat", "dog"], accuracy=0.9)
    assert client.get("/model").json()["version"] == 2
    after = client.post("/predict", files=files(("a.png", image_bytes())))
    assert after.json()["model_version"] == 2
    assert {c["label"] for c in after.json()["predictions"][0]["top"]} <= {"cat", "dog"}
    assert client.get("/readyz").json()["model_version"] == 2


def test_one_request_never_mixes_versions(published: Path, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish that lands while a request is loading the champion does not leak into it."""
    real_champion = Published.champion
    published_during_request: list[int] = []

    def champion_then_publish(self: Published, record: object) -> object:
        if not published_during_request:  # the first request: publish v2 mid-request
            published_during_request.append(add_model(published, seed=7, classes=["x", "y", "z"]).version)
        return real_champion(self, record)  # type: ignore[arg-type]

    monkeypatch.setattr(Published, "champion", champion_then_publish)
    during = client.post("/predict?top_k=10", files=files(("a.png", image_bytes())))
    assert published_during_request == [2]
    assert during.json()["model_version"] == 1
    assert {c["label"] for c in during.json()["predictions"][0]["top"]} == set(CLASSES)
    later = client.post("/predict?top_k=10", files=files(("a.png", image_bytes())))
    assert later.json()["model_version"] == 2
    assert {c["label"] for c in later.json()["predictions"][0]["top"]} == {"x", "y", "z"}


def test_champion_is_loaded_once_per_version(published: Path, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.artifacts import ModelRecord

    loads: list[int] = []
    real_load = ModelRecord.load

    def counting_load(self: ModelRecord, device: str = "cpu") -> torch.nn.Module:
        loads.append(self.version)
        return real_load(self, device)

    monkeypatch.setattr(ModelRecord, "load", counting_load)
    for _ in range(3):
        client.post("/predict", files=files(("a.png", image_bytes())))
    add_model(published, seed=2, export=False)
    for _ in range(2):
        client.get("/readyz")
    assert loads == [1, 2]


# ------------------------------------------------------------------------------ settings, docs


def test_settings_from_environment_and_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTOAUG_PORT", "9123")
    monkeypatch.setenv("AUTOAUG_PUBLISHED_DIR", str(tmp_path))
    monkeypatch.setenv("AUTOAUG_MLFLOW_UI_URL", "http://mlflow:5000/")
    settings = load_settings(host="0.0.0.0", port=None)
    assert (settings.host, settings.port, settings.published_dir) == ("0.0.0.0", 9123, tmp_path)
    assert settings.mlflow_ui_url == "http://mlflow:5000"
    assert load_settings(port=8001).port == 8001  # an option beats the environment
    monkeypatch.setenv("AUTOAUG_PORT", "99999")
    with pytest.raises(ConfigError, match=r"port \(AUTOAUG_PORT\) = '99999': Input should be less than or equal"):
        load_settings()
    with pytest.raises(ConfigError, match=r"port \(option\) = -1"):
        serve(port=-1)  # refused before anything starts
    monkeypatch.delenv("AUTOAUG_PORT")
    with pytest.raises(ConfigError, match="device .* expected cpu, cuda"):
        load_settings(device="tpu")
    # an accelerator the machine lacks: refused at start-up, naming what it has (machine-independent:
    # cuda:N with N = the device count never exists)
    import torch

    missing = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    monkeypatch.setenv("AUTOAUG_DEVICE", missing)
    with pytest.raises(ConfigError, match=rf"device \(AUTOAUG_DEVICE\) = '{missing}': .*this machine has .*use cpu or auto"):
        load_settings()
    monkeypatch.delenv("AUTOAUG_DEVICE")
    assert load_settings(device="auto").torch_device() in ("cpu", "cuda")


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    expected = {
        ("get", "/healthz"), ("get", "/readyz"), ("get", "/policy"), ("get", "/policies"),
        ("get", "/policies/{version}"), ("get", "/policies/{version}/grid.png"), ("get", "/model"),
        ("get", "/models"), ("get", "/model/weights"), ("post", "/predict"), ("post", "/augment"),
    }
    documented = {(method, path) for path, item in schema["paths"].items() for method in item}
    assert expected <= documented
    for method, path in expected:
        operation = schema["paths"][path][method]
        assert operation.get("summary"), path
        ok = operation["responses"]["200"]["content"]
        if "application/json" in ok:
            assert "$ref" in ok["application/json"]["schema"], path  # a pydantic model, not a bare dict
    assert {"PolicyIn", "OpCallIn", "ErrorOut", "PredictOut", "ModelOut", "PolicyOut"} <= set(schema["components"]["schemas"])
    assert client.get("/docs").status_code == 200


def test_policy_published_without_promote_is_history_only(published: Path, client: TestClient) -> None:
    publish_policy(published, tiny_policy(0.1), fingerprint="x", mlflow_run_id=None, summary={}, promote=False)
    assert client.get("/policy").json()["version"] == 1
    assert [p["version"] for p in client.get("/policies").json()["policies"]] == [2, 1]


def test_serve_runs_uvicorn_with_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from fastapi import FastAPI

    calls: list[tuple[object, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    monkeypatch.setenv("AUTOAUG_PORT", "8123")
    serve(host="0.0.0.0", published_dir=tmp_path, mlflow_ui_url="http://mlflow:5000")
    (app, kwargs), = calls
    assert isinstance(app, FastAPI) and kwargs["host"] == "0.0.0.0" and kwargs["port"] == 8123
    assert app.state.settings.published_dir == tmp_path and app.state.settings.mlflow_ui_url == "http://mlflow:5000"


# ------------------------------------------------------------------------------ read path, HEAD, workers


def test_policy_and_model_are_prepared_once_per_publish(
    published: Path, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polling reads and validates nothing again until current.json changes."""
    from pipeline.artifacts import PolicyRecord

    validated: list[int] = []
    real_policy = PolicyRecord.policy

    def counting_policy(self: PolicyRecord) -> Policy:
        validated.append(self.version)
        return real_policy(self)

    monkeypatch.setattr(PolicyRecord, "policy", counting_policy)
    first = client.get("/policy")
    for _ in range(3):
        assert client.get("/policy").content == first.content
        assert client.get("/policy", headers={"If-None-Match": first.headers["etag"]}).status_code == 304
        assert client.get("/model").status_code == 200
    assert validated == [1]
    add_policy(published, magnitude=0.9)
    assert client.get("/policy").json()["version"] == 2 and validated == [1, 2]
    # the links in the body follow the address the client used
    other = client.get("/policy", headers={"Host": "api.example:8080"})
    assert other.json()["url"] == "http://api.example:8080/policies/2"


def test_head_wherever_get(client: TestClient) -> None:
    for url in ("/healthz", "/readyz", "/policy", "/policies", "/policies/1", "/policies/1/grid.png", "/model",
                "/models", "/model/weights", "/"):
        get, head = client.get(url), client.head(url)
        assert head.status_code == get.status_code == 200, url
        assert head.content == b"" and head.headers.get("content-length") == get.headers.get("content-length"), url
        assert head.headers.get("etag") == get.headers.get("etag"), url
    etag = client.get("/policy").headers["etag"]
    assert client.head("/policy", headers={"If-None-Match": etag}).status_code == 304
    assert client.head("/predict").status_code == 405  # no GET there either


def test_serve_with_workers_hands_uvicorn_the_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import uvicorn

    calls: list[tuple[object, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    monkeypatch.setattr(os, "environ", dict(os.environ))  # serve exports the settings for its workers
    serve(port=8124, published_dir=tmp_path, workers=2)
    (app, kwargs), = calls
    assert app == "service.app:create_app" and kwargs["factory"] is True and kwargs["workers"] == 2
    assert os.environ["AUTOAUG_PUBLISHED_DIR"] == str(tmp_path) and os.environ["AUTOAUG_WORKERS"] == "2"
    assert load_settings().published_dir == tmp_path  # what each worker's create_app() reads back
    with pytest.raises(ConfigError, match=r"workers \(option\) = 0"):
        serve(workers=0)


def test_predict_in_bf16_agrees_with_fp32(published: Path, make_client: Callable[..., TestClient]) -> None:
    """bf16 (the default where it runs natively: precision=auto) ranks classes like fp32."""
    uploads = files(*[(f"{i}.png", image_bytes((32, 32), seed=i)) for i in range(6)])
    exact = make_client(published, precision="fp32").post("/predict?top_k=2", files=uploads).json()
    fast = make_client(published, precision="bf16").post("/predict?top_k=2", files=uploads).json()
    for a, b in zip(exact["predictions"], fast["predictions"], strict=True):
        first, second = a["top"]
        if first["probability"] - second["probability"] > 0.05:  # not a near tie bf16 may flip
            assert b["top"][0]["index"] == first["index"]
        assert b["top"][0]["probability"] == pytest.approx(first["probability"], abs=0.02)


def test_a_folder_rebuilt_from_scratch_is_noticed(published: Path, client: TestClient) -> None:
    """Same version numbers, and a current.json with the very same bytes (written within the same
    second), but new files: the service serves the new content."""
    import os
    import shutil

    pointer = (published / "current.json").read_bytes()
    os.link(published / "current.json", published.parent / "old-current.json")  # its inode stays taken
    before = client.get("/policy")
    shutil.rmtree(published)
    add_policy(published, magnitude=0.2)
    add_model(published, seed=3)
    (published / "new.json").write_bytes(pointer)
    os.replace(published / "new.json", published / "current.json")  # as publish writes it: a new file
    after = client.get("/policy")
    assert after.json()["version"] == before.json()["version"] == 1
    assert after.headers["etag"] != before.headers["etag"]
    assert Policy.from_dict(after.json()["policy"]) == tiny_policy(0.2)
