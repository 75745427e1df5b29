"""Visual question answering and cross-modal retrieval on synthetic Sort-of-CLEVR-style scenes (docs/VQA.md).

Modules: ``scenes`` (generator, questions, captions), ``tokenizer`` (word-level, fitted here), ``data``
(sets in memory, image input), ``model`` (``MLAModel`` + tokenizer + answers), ``training`` (train,
evaluate per question type), ``retrieval`` (stage-2 aligned encoders, Top-k), ``requests`` (the worker's
message contract), ``errors``.
"""
