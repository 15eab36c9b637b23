"""Evaluation: what a trained model is worth, measured from the command line.

- perplexity.py: `nanogpt perplexity`: zero-shot perplexity and bits per byte on a text file or
  a prepared dataset, with sliding windows.
- sample.py: `nanogpt sample`: text from a run, a checkpoint or a pretrained model, streamed.
- multiple_choice.py: `nanogpt evaluate`: multiple-choice accuracy (acc, acc_norm) as lm-evaluation-harness
  scores it, batched, over torchrun ranks; tasks.py: the TASKS registry and their datasets.

May import: every layer below it (training's device choice, models, data, checkpoints, config)."""

