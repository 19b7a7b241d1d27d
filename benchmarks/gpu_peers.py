"""The GPU peers of `gpu_generate.py`, and the machine's ceilings (issue 8, part 5b).

Same protocol as `gpu_generate.py`: the architectures of Whisper large-v3 and
large-v3-turbo with random weights, a fixed decode length (end-of-text suppressed,
so every row decodes exactly `--tokens` tokens after the 4-token prompt), warm-up,
then the median of `--repeats` timed calls with the device synchronised.

- `ceilings`: bf16 matmul TFLOP/s (8192^3, cuBLAS) and device memory copy GB/s
  (read + write of a 2 GiB buffer); the denominators of BENCHMARKS.md's fractions.
- `transformers`: `WhisperForConditionalGeneration` in float16 with SDPA attention:
  encoder ms per window; `generate` (greedy) with its dynamic cache ("eager") and
  with its static cache, whose decode step transformers compiles itself.
- `openai`: openai-whisper's KV-cached `decode` (its fp16 mode: float16 activations,
  float32 weights cast per layer, as `transcribe(fp16=True)` runs).

    python benchmarks/gpu_peers.py ceilings transformers openai \\
        --archs large-v3-turbo --batches 1 32 --out results.jsonl

Peers are benchmark-only: they are imported here and nowhere in `src/`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

ARCHS = {
    # name: (encoder layers, decoder layers, width, heads); 128 mels. "smoke" is a
    # tiny stand-in that runs in seconds on a CPU, to check this script.
    "large-v3": (32, 32, 1280, 20),
    "large-v3-turbo": (32, 4, 1280, 20),
    "smoke": (2, 2, 64, 2),
}
VOCAB = 51866
DEVICE = "cuda"
SOT, EOT, EN, TRANSCRIBE, NO_TIMESTAMPS = 50258, 50257, 50259, 50360, 50364


def _median_ms(fn, repeats: int, sync) -> tuple[float, float]:
    start = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - start
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), first


def _sync():
    import torch

    return torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)


def _emit(row: dict, out: str | None) -> None:
    print(json.dumps(row), flush=True)
    if out:
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def ceilings(args) -> None:
    import torch

    sync = _sync()
    n = args.matmul_size
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    ms, _ = _median_ms(lambda: a @ b, args.repeats * 4, sync)
    source = torch.empty(2**30, device=DEVICE, dtype=torch.bfloat16)  # 2 GiB
    target = torch.empty_like(source)
    copy_ms, _ = _median_ms(lambda: target.copy_(source), args.repeats * 4, sync)
    _emit(
        {
            "what": "ceilings",
            "device": torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE,
            "bf16_matmul_tflops": round(2 * n**3 / (ms / 1000) / 1e12, 1),
            "copy_gb_per_s": round(2 * source.nbytes / (copy_ms / 1000) / 1e9, 1),
        },
        args.out,
    )


def _transformers_model(arch: str):
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    encoder_layers, decoder_layers, width, heads = ARCHS[arch]
    config = WhisperConfig(
        vocab_size=VOCAB,
        num_mel_bins=128,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        d_model=width,
        encoder_ffn_dim=4 * width,
        decoder_ffn_dim=4 * width,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=SOT,
        eos_token_id=EOT,
        pad_token_id=EOT,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).to(DEVICE, torch.float16).eval()
    return model


def transformers_peer(args) -> None:
    import torch
    import transformers
    from transformers import GenerationConfig, GenerationMixin

    sync = _sync()
    for arch in args.archs:
        model = _transformers_model(arch)
        for batch in args.batches:
            features = torch.randn(batch, 128, 3000, device=DEVICE, dtype=torch.float16)
            prompt = torch.tensor([[SOT, EN, TRANSCRIBE, NO_TIMESTAMPS]] * batch, device=DEVICE)
            row = {
                "what": "transformers",
                "version": transformers.__version__,
                "arch": arch,
                "batch": batch,
                "dtype": "float16",
                "attention": "sdpa",
            }
            try:
                with torch.inference_mode():
                    encode_ms, _ = _median_ms(
                        lambda features=features, model=model: model.model.encoder(features),
                        args.repeats,
                        sync,
                    )
                    row["encoder_ms_per_window"] = round(encode_ms / batch, 3)
                    for cache in args.caches:
                        config = GenerationConfig(
                            max_new_tokens=args.tokens,
                            min_new_tokens=args.tokens,
                            do_sample=False,
                            num_beams=1,
                            eos_token_id=EOT,
                            pad_token_id=EOT,
                            decoder_start_token_id=SOT,
                            cache_implementation="static" if cache == "static" else None,
                        )
                        lengths = set()

                        def run(
                            features=features,
                            prompt=prompt,
                            config=config,
                            lengths=lengths,
                            model=model,
                        ):
                            # The plain encoder-decoder `generate`, not Whisper's
                            # long-form wrapper: one 30-s window per row.
                            out = GenerationMixin.generate(
                                model,
                                input_features=features,
                                decoder_input_ids=prompt,
                                generation_config=config,
                            )
                            lengths.add(int(out.shape[1]) - prompt.shape[1])

                        ms, first = _median_ms(run, args.repeats, sync)
                        row[f"{cache}_generate_ms_per_window"] = round(ms / batch, 3)
                        row[f"{cache}_ms_per_step"] = round(ms / args.tokens, 3)
                        row[f"{cache}_audio_seconds_per_second"] = round(
                            30 * batch / (ms / 1000), 1
                        )
                        row[f"{cache}_first_call_s"] = round(first, 2)
                        row[f"{cache}_tokens"] = sorted(lengths)
            except Exception as error:  # out of memory or an API change: say so, go on
                row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            _emit(row, args.out)
        del model
        torch.cuda.empty_cache()


def openai_peer(args) -> None:
    import torch
    import whisper
    from whisper.decoding import DecodingOptions, decode
    from whisper.model import ModelDimensions, Whisper

    sync = _sync()
    for arch in args.archs:
        encoder_layers, decoder_layers, width, heads = ARCHS[arch]
        dims = ModelDimensions(
            n_mels=128,
            n_audio_ctx=1500,
            n_audio_state=width,
            n_audio_head=heads,
            n_audio_layer=encoder_layers,
            n_vocab=VOCAB,
            n_text_ctx=448,
            n_text_state=width,
            n_text_head=heads,
            n_text_layer=decoder_layers,
        )
        torch.manual_seed(0)
        model = Whisper(dims).to(DEVICE).eval()
        for batch in args.batches:
            mel = torch.randn(batch, 128, 3000, device=DEVICE)
            options = DecodingOptions(
                language="en",
                without_timestamps=True,
                sample_len=args.tokens,
                suppress_tokens=[EOT],
                suppress_blank=False,
                fp16=True,
            )
            row = {"what": "openai-whisper", "version": whisper.__version__, "arch": arch}
            row.update(batch=batch, dtype="float16 activations")
            lengths = set()

            def run(mel=mel, options=options, lengths=lengths, model=model):
                for result in decode(model, mel, options):
                    lengths.add(len(result.tokens))

            try:
                ms, first = _median_ms(run, args.repeats, sync)
                row.update(
                    generate_ms_per_window=round(ms / batch, 3),
                    ms_per_step=round(ms / args.tokens, 3),
                    audio_seconds_per_second=round(30 * batch / (ms / 1000), 1),
                    first_call_s=round(first, 2),
                    tokens=sorted(lengths),
                )
            except Exception as error:
                row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            _emit(row, args.out)
        del model
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="+", choices=["ceilings", "transformers", "openai"])
    parser.add_argument("--archs", nargs="+", default=["large-v3-turbo"], choices=list(ARCHS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--caches", nargs="+", default=["static"], choices=["static", "eager"])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--out", default=None, help="append JSON lines here")
    parser.add_argument("--device", default="cuda", help="cpu: check this script (smoke)")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    parts = {"ceilings": ceilings, "transformers": transformers_peer, "openai": openai_peer}
    for part in args.parts:
        parts[part](args)


if __name__ == "__main__":
    main()
