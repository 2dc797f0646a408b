"""DVC stage `zoo_eval`: every zoo adapter swapped into one live model and scored on the test set; two of them
summed vs one adapter trained on both digits; a heatmap of the error changes."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "pretrained", "zoo", "pair", "metrics_out", "headline_out", "numerics_out",
                       "heatmap_out")
    from lora_mnist.config import load_params

    params = load_params()

    from lora_mnist.artifacts import write_json
    from lora_mnist.figures import write_zoo_heatmap
    from lora_mnist.runtime import configure_torch, numerics, resolve_device
    from lora_mnist.summary import zoo_headline
    from lora_mnist.zoo_eval import evaluate_zoo, stale_adapters

    device = resolve_device(params.device)
    configure_torch(device)
    zoo = params.zoo
    for stale in stale_adapters(args.zoo, zoo.digits, args.pair):
        print(f"zoo_eval: warning: {stale} is not in zoo.digits {list(zoo.digits)}; delete it (its digit was removed) "
              f"so that the models/zoo dependency matches on other machines")
    result = evaluate_zoo(args.data, args.pretrained, args.zoo, args.pair, zoo.digits, zoo.compose, device)
    write_zoo_heatmap(args.heatmap_out, result.wrong, result.own)
    write_json(args.metrics_out, result.metrics)
    write_json(args.headline_out, headline := zoo_headline(result.metrics))
    write_json(args.numerics_out, numerics(device))
    models = result.metrics["composition"]["models"]
    print(f"zoo_eval: {headline['zoo_improved']} of {headline['zoo_adapters']} adapters cut their digit's errors; "
          f"digits {list(zoo.compose)}: summed adapters {models['sum']['wrong']}, trained together {models['pair']['wrong']}")


if __name__ == "__main__":
    run_stage(main)
