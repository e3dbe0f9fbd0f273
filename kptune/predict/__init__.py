"""The predictor: a seq2seq model that translates a conv descriptor into tuning parameters.

tokenizer (problem -> source tokens, config <-> target tokens), models (LSTM with attention,
Transformer), beam (constrained beam search over the space's completable prefixes), checkpoint
(safetensors + JSON), training, evaluation (metrics and baselines).
"""
