"""Model kinds and the backends that run them, apart from the scoring steps that use them.

- `loader`: which model, which backend; the one entrance to loading an NLI model.
- `files`: finding and checking a model whatever runs it (folder or hub id, labels, limits).
- `devices`: torch device and dtype choice, shared by every model torch runs.
- `nli_torch`, `nli_onnx`, `nli_openvino`, `export`: NLI cross-encoders on each backend.
- `classifier`: trained sequence classifiers (DuoGuard, prompt-injection guards), on torch.

Every model object offers the same scoring surface (`logits`, `to_host`, `tokenizer`,
`max_length`, `input_names`, `device`, `dtype`), so the scorer batches any of them alike.
Nothing here imports the scorer: the arrows point from `engine` into `models`, never back.
"""
