import platform
import subprocess
import sys

import pytest
import torch

from lwd.training.host import training_device
from lwd.training.sft import PretrainConfig, pretrain


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_applies_on_glibc():
    # In a child process: the setting is process-wide and would outlive this test.
    code = "from lwd.training.host import keep_freed_memory; raise SystemExit(0 if keep_freed_memory() else 1)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_training_device_accepts_the_cpu():
    assert training_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "mps", "cuda:x"])
def test_training_device_names_a_device_it_cannot_train_on(name):
    with pytest.raises(ValueError, match="--device"):
        training_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_training_device_refuses_cuda_without_a_gpu_and_says_what_to_use():
    with pytest.raises(ValueError, match="sees no CUDA GPU.*--device cpu"):
        training_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_pretrain_on_a_missing_gpu_fails_before_writing_anything(tmp_path):
    config = PretrainConfig(store=str(tmp_path / "store"), out=str(tmp_path / "sft"), device="cuda", progress=False)
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        pretrain(config)
    assert not (tmp_path / "sft").exists()
