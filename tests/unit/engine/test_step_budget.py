import pytest

from handler.engine.step_budget import CHUNK_QUANTUM, FIRST_GUESS_PREFILL, MIN_PREFILL, StepBudget


def test_a_lone_prompt_takes_the_whole_batch():
    assert StepBudget(target_s=0.15, max_tokens=512).prefill_allowance(decoding=0) == 512


def test_before_any_measurement_a_modest_guess():
    assert StepBudget(target_s=0.15, max_tokens=512).prefill_allowance(decoding=2) == FIRST_GUESS_PREFILL


def test_steps_without_running_streams_do_not_teach_the_model():
    budget = StepBudget(target_s=0.15, max_tokens=512)
    for tokens in (512, 512, 100):
        budget.record(tokens, 0.5, decoding=0)
    assert budget.cost_model() is None


def test_the_cost_model_is_learned_from_steps():
    budget = StepBudget(target_s=0.15, max_tokens=512)
    for tokens in (1, 2, 64, 128, 512, 4):  # 10 ms per step plus 1 ms per token
        budget.record(tokens, 0.010 + 0.001 * tokens, decoding=1)
    overhead, per_token = budget.cost_model()
    assert abs(overhead - 0.010) < 1e-9 and abs(per_token - 0.001) < 1e-9
    # (150 ms - 10 ms) / 1 ms = 140 tokens per step, 3 of them the running streams' own: 137, aligned to
    # 1 + a multiple of 16 (the prompt's own micro-batch then holds 128)
    assert budget.prefill_allowance(decoding=3) == 129


def test_a_long_prompt_always_advances_and_never_overflows_the_batch():
    slow = StepBudget(target_s=0.001, max_tokens=512)
    for tokens in (1, 300):
        slow.record(tokens, 0.5 + tokens, decoding=1)  # far beyond the target whatever the size
    assert slow.prefill_allowance(decoding=1) == MIN_PREFILL
    fast = StepBudget(target_s=10, max_tokens=32)
    for tokens in (1, 30):
        fast.record(tokens, 1e-6 * tokens, decoding=1)
    assert fast.prefill_allowance(decoding=4) == 28  # the batch holds 32 rows, 4 are the streams'


@pytest.mark.parametrize(("target_s", "expected"), [(0.070, 65), (0.085, 81), (0.100, 97), (0.101, 97)])
def test_chunks_beside_running_streams_keep_the_prompts_micro_batch_on_the_fast_path(target_s, expected):
    """One token of the chunk shares a micro-batch with the streams' tokens; the rest, a multiple of 16 and
    at least 64, is the prompt's own micro-batch."""
    budget = StepBudget(target_s=target_s, max_tokens=512)
    for tokens in (2, 66, 130):
        budget.record(tokens, 0.001 * tokens, decoding=1)  # 1 ms per token, no overhead
    assert budget.prefill_allowance(decoding=1) == expected
    assert (expected - 1) % CHUNK_QUANTUM == 0 and expected >= MIN_PREFILL


def test_a_deepening_prompt_shrinks_its_chunks():
    """Later chunks of a long prompt cost more per token (attention over what was read): the latest
    mixed step bounds the next, where a fit over older steps would overshoot the target."""
    budget = StepBudget(target_s=0.2, max_tokens=512)
    for _ in range(20):
        budget.record(1, 0.010, decoding=1)
    for tokens in (66, 98, 130):
        budget.record(tokens, 0.0015 * tokens, decoding=1)  # the fit's cost: 1.5 ms a token
    fitted = budget.prefill_allowance(decoding=1)
    budget.record(130, 0.40, decoding=1)  # the prompt is deep now: 3 ms a token
    deeper = budget.prefill_allowance(decoding=1)
    assert deeper < fitted and 0.003 * (deeper + 1) <= 0.2 + 0.01
