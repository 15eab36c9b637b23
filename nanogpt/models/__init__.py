"""Models: the architectures, where their weights come from and go to, and text generation.

- gpt.py: GPT-2 (the seed's model.py); llama.py: Llama (RoPE, RMSNorm, SwiGLU, grouped-query
  attention). Both keep nanogpt.contracts.LanguageModel, and both count their parameters and
  FLOPs through nanogpt.config.sizes.
- weights.py: the registry's builders, and weights from elsewhere (OpenAI's GPT-2, Hugging Face
  GPT-2 and Llama directories, nanoGPT's ckpt.pt, this product's checkpoints).
- loading.py: a model and its tokenizer from anything a user names (`sample`, `perplexity`,
  `export`); generation.py: sampling, token streams and text; export.py: `nanogpt export`.
- multiple_choice.py: multiple-choice tasks scored as lm-evaluation-harness does (`nanogpt
  evaluate` and the `[evaluation]` a run does while it trains).

May import: config, registry, data (tokenizers), checkpoints, and the foundation; never training
or runs (a model is trained by training/, not the other way round)."""

