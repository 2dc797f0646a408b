"""What the base model needs: MNIST, RichBoyNet, training, pretraining and choosing the target digit."""
