"""Evaluation: what a trained model is worth, measured from the command line.

- perplexity.py: `nanogpt perplexity`: zero-shot perplexity and bits per byte on a text file or
  a prepared dataset, with sliding windows.
- sample.py: `nanogpt sample`: text from a run, a checkpoint or a pretrained model, streamed.
- multiple_choice.py: `nanogpt evaluate`: multiple-choice accuracy (acc, acc_norm) of a model on
  hellaswag, arc, piqa, winogrande, ..., one process or a torchrun job's.
- harness.py: `nanogpt evaluate --harness`: lm-evaluation-harness on a temporary Hugging Face export.

May import: every layer below it (training's device choice, models, data, checkpoints, config)."""

