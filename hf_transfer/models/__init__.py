"""Loading pretrained models safely, and what each model family changes: seq2seq warm starts, the wav2vec2
family's speech options, Whisper's windowed encoder and its CTranslate2 checkpoints converted."""
