"""`make export`: the full models an adapter stands for, built on demand and verified before they are written."""

from __future__ import annotations

import json
from pathlib import Path

from lora_mnist.cli import ArtifactError, parse_paths, run_stage
from lora_mnist.config import load_params
from lora_mnist.numerics import configure_torch

# numpy and torch load inside export(), after configure_torch() pinned the numerics mode: OpenBLAS reads its kernel
# set and thread count when numpy loads, and portable mode computes the merge's products there.

FINETUNED = "finetuned.safetensors"  # on demand (export): the whole fine-tuned model, frozen originals + factors
MERGED = "merged.safetensors"  # on demand (export): W + scale * B @ A folded in, a plain RichBoyNet


def export(pretrained: str | Path, adapter_dir: str | Path, manifest: str | Path, out_dir: str | Path,
           numerics: str) -> list[str]:
    """Build, verify and write the two full models an adapter stands for: the fine-tuned model (frozen originals and
    LoRA factors, with the parameters that were trainable) and the merged one (a plain RichBoyNet, no LoRA code
    needed). Verified: the base tensors equal the snapshot's manifest, the factors what training recorded, and the
    merged model's logits the LoRA model's; returns the files written."""
    configure_torch("cpu", numerics)  # the merge's sums round as the `numerics` mode's kernels do
    import torch

    from lora_mnist.artifacts import digest, read_json, safetensors_bytes, write_bytes
    from lora_mnist.base.model import load_model, model_bytes
    from lora_mnist.lora.adapter import load_adapter
    from lora_mnist.lora.layer import base_state_dict, merge
    from lora_mnist.lora.peft_format import RECORD
    from lora_mnist.numerics import generator
    from lora_mnist.verify import Proof, check_adapter, read_manifest

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    model = load_model(pretrained)
    load_adapter(model, adapter_dir)
    manifest, record = read_manifest(manifest), read_json(adapter_dir / RECORD)
    proof, layers = Proof(), {n: (m.in_features, m.out_features) for n, m in model.named_children() if n != "relu"}
    failures = [f for found in check_adapter(proof, adapter_dir, record.get("digits"), manifest, layers).values()
                for f in found]
    base = {k: digest(v.detach().numpy()) for k, v in base_state_dict(model).items()}
    failures += proof.same_digests(pretrained, base, manifest, "the snapshot")
    merged = merge(model)
    probe = torch.randn(256, 784, generator=generator(0))
    with torch.inference_mode():
        if not torch.equal(merged.eval()(probe), model.eval()(probe)):
            failures.append(f"{MERGED}: its logits differ from the LoRA model's")
    if failures:
        raise ArtifactError("export refused:\n  " + "\n  ".join(failures))
    trainable = json.dumps(record["trainable"])
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(out_dir / FINETUNED, safetensors_bytes(model.state_dict(), {"trainable": trainable}))
    write_bytes(out_dir / MERGED, model_bytes(merged))
    return [str(out_dir / FINETUNED), str(out_dir / MERGED)]


def _main() -> None:
    """`python -m lora_mnist.export PRETRAINED ADAPTER_DIR MANIFEST OUT_DIR` (make export): the full models, computed
    in params.yaml's numerics mode."""
    args = parse_paths(export.__doc__, "pretrained", "adapter_dir", "manifest", "out_dir")
    mode = load_params().numerics
    for path in export(args.pretrained, args.adapter_dir, args.manifest, args.out_dir, mode):
        print(f"export: {path}")


if __name__ == "__main__":
    run_stage(_main)
