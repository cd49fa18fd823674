"""`lwd gateway token add|list|revoke`, `lwd gateway serve` options, `lwd bench gateway`."""

import json

import pytest

from lwd.cli import main, parse_config
from lwd.gateway.config import GatewayBenchConfig, GatewayConfig
from lwd.gateway.launch import serve_arguments
from lwd.gateway.tokens import TokenBook


def test_token_add_prints_a_working_token_once_and_list_and_revoke_manage_it(tmp_path, capsys):
    directory = str(tmp_path / "gw")
    assert main(["gateway", "token", "add", "robot-7", "--dir", directory]) == 0
    token = capsys.readouterr().out.splitlines()[0]
    book = TokenBook(directory)
    assert book.robot_for(token) == "robot-7"
    assert main(["gateway", "token", "list", "--dir", directory]) == 0
    listing = capsys.readouterr().out
    assert "robot-7" in listing and "active" in listing and token.split(".")[2] not in listing
    assert main(["gateway", "token", "revoke", "robot-7", "--dir", directory]) == 0
    capsys.readouterr()
    assert TokenBook(directory).robot_for(token) is None
    assert main(["gateway", "token", "list", "--dir", directory]) == 0
    assert "revoked" in capsys.readouterr().out


def test_token_errors_are_clear(tmp_path, capsys):
    assert main(["gateway", "token", "add", "no spaces", "--dir", str(tmp_path)]) == 2
    assert "must match" in capsys.readouterr().err
    assert main(["gateway", "token", "revoke", "robot-9", "--dir", str(tmp_path)]) == 2
    assert "no active token" in capsys.readouterr().err


def test_a_forged_token_with_a_real_token_id_is_refused(tmp_path):
    book = TokenBook(tmp_path)
    token = book.add("robot-1")
    prefix, token_id, _ = token.split(".")
    assert book.robot_for(f"{prefix}.{token_id}.{'A' * 43}") is None
    assert book.robot_for(token + "x") is None and book.robot_for("garbage") is None


def test_serve_options_reproduce_the_config_a_launcher_passes():
    config = GatewayConfig(dir="d", store="s", registry="r", port=0, durable=False, ssl_certfile="c", ssl_keyfile="k")
    assert parse_config(GatewayConfig, serve_arguments(config), "lwd gateway serve", "") == config


def test_tls_needs_both_files():
    with pytest.raises(ValueError, match="both"):
        GatewayConfig(ssl_certfile="cert.pem")


@pytest.mark.slow
def test_bench_gateway_measures_uploads_and_inference(tmp_path):
    from lwd.gateway.bench import bench_gateway

    config = GatewayBenchConfig(
        concurrency=(3,), seconds=1.5, steps=20, paced_robots=4, paced_interval_s=1.0, paced_seconds=2.0,
        out=str(tmp_path / "gateway.json"),
    )  # fmt: skip
    report = bench_gateway(config)
    [level] = report["levels"]
    assert level["upload"]["requests"] > 0 and level["upload"]["errors"] == 0
    assert level["act"]["requests"] > 0 and level["act"]["errors"] == 0
    assert level["upload"]["p99_ms"] >= level["upload"]["p50_ms"] > 0
    assert report["paced"]["uploads"] >= 4 and report["paced"]["errors"] == 0
    assert report["episodes_committed"] == level["upload"]["requests"] + report["paced"]["uploads"]
    assert json.loads((tmp_path / "gateway.json").read_text())["levels"] == report["levels"]
