"""Silero VAD's fixed framing at 16 kHz (shared by the model and the timestamps)."""

SAMPLE_RATE = 16000  # Hz; the only rate of the 16 kHz network
CHUNK_SAMPLES = 512  # samples per speech probability (32 ms)
CONTEXT_SAMPLES = 64  # samples of the previous chunk each window starts with
WINDOW_SAMPLES = CHUNK_SAMPLES + CONTEXT_SAMPLES  # 576 samples seen per chunk
HIDDEN_SIZE = 128  # LSTM state size
