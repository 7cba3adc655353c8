"""The trained model as a TRL reward function: the training encoding through the scoring engine, in GRPO as it is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import PAIRS, build_tiny_causal_lm, quick_start

from pipeline import RewardFunction
from pipeline.core.errors import UserError
from pipeline.model.scorer import RewardScorer

LONG_COMPLETION = " ".join(["the sky is blue because of light"] * 300)  # about 2,000 tokens


@pytest.fixture(scope="module")
def reward(tiny_model_dir: Path) -> RewardFunction:
    return RewardFunction.from_pretrained(tiny_model_dir)


def test_scores_equal_the_quick_start_for_plain_text_in_order(reward, reference) -> None:
    prompts, completions = zip(*PAIRS, strict=True)
    scores = reward(prompts=list(prompts), completions=list(completions), completion_ids=None, trainer_state=None)
    assert isinstance(scores, list) and all(isinstance(x, float) for x in scores)
    np.testing.assert_allclose(scores, reference, atol=1e-4, rtol=0)
    assert reward.__name__ == "q2_reward"


def test_conversational_inputs_score_as_their_rendered_text(reward) -> None:
    prompt = [{"role": "user", "content": "why is the sky blue"}, {"role": "assistant", "content": "light"},
              {"role": "user", "content": "what about red"}]  # fmt: skip
    completion = [{"role": "assistant", "content": "because of light"}]
    rendered = "Human: why is the sky blue\n\nAssistant: light\n\nHuman: what about red"
    # Both sides in batches of the same shape: scores of different batch shapes differ by float rounding on some
    # CPUs (docs/scoring.md, "How close scores are": the tolerance across batch shapes).
    conversational = reward(prompts=[prompt, prompt], completions=[completion, completion])
    plain = reward(prompts=[rendered], completions=["because of light"])
    assert reward(prompts=[rendered, rendered], completions=["because of light"] * 2) == conversational
    assert reward(prompts=[prompt], completions=[completion]) == plain
    parts = [
        {"role": "assistant", "content": [{"type": "text", "text": "because "}, {"type": "text", "text": "of light"}]}
    ]
    assert reward(prompts=[prompt], completions=[parts]) == plain


def test_a_completion_of_2000_tokens_is_truncated_as_in_training(reward, tiny_model_dir: Path) -> None:
    scores = reward(prompts=["why is the sky blue"], completions=[LONG_COMPLETION])
    expected = quick_start(tiny_model_dir, [("why is the sky blue", LONG_COMPLETION)])
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("completion", "message"),
    [
        ([{"content": "hi"}], "completion 0: message 1 has no 'role'"),
        ([{"role": "robot", "content": "hi"}], "completion 0: message 1 has role 'robot'; roles are"),
        ([{"role": "assistant", "content": 3}], "completion 0: message 1 has a int content; content must be text"),
        ([{"role": "assistant"}], "completion 0: message 1 has missing content"),
        ([], "completion 0: the conversation is empty"),
        ([1, 2], "completion 0: expected text or a list of"),
    ],
)
def test_malformed_messages_are_one_line_errors_naming_the_completion(reward, completion, message) -> None:
    with pytest.raises(UserError) as error:
        reward(prompts=["why"], completions=[completion])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_standardised_rewards_use_the_stored_statistics(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no reward_mean/reward_std"):
        RewardFunction.from_pretrained(tiny_model_dir, standardize=True)
    model_dir = tmp_path / "with_stats"
    shutil.copytree(tiny_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "reward_mean": 0.5, "reward_std": 2.0}))
    raw = RewardFunction.from_pretrained(model_dir)(prompts=["why"] * 2, completions=["light", "fry it"])
    z = RewardFunction.from_pretrained(model_dir, standardize=True)(
        prompts=["why"] * 2, completions=["light", "fry it"]
    )
    np.testing.assert_allclose(z, (np.asarray(raw) - 0.5) / 2.0, atol=1e-9)


def test_grpo_trains_with_it_and_logs_the_scorers_rewards(tiny_model_dir: Path, tmp_path: Path) -> None:
    # A real TRL GRPOTrainer, 2 steps, a tiny random policy: the reward function goes into reward_funcs as it is.
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    policy = build_tiny_causal_lm(tmp_path / "policy")
    reward = RewardFunction.from_pretrained(tiny_model_dir)
    seen: list[tuple[list[str], list[str], np.ndarray]] = []
    score = reward.scorer.score

    def recording_score(prompts, responses, **kwargs):
        scores = score(prompts, responses, **kwargs)
        seen.append((list(prompts), list(responses), scores))
        return scores

    reward.scorer.score = recording_score
    dataset = Dataset.from_dict({"prompt": ["why is the sky blue", "how do i cook pasta", "write a short story",
                                            "what is the best city"]})  # fmt: skip
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=6, max_steps=2, report_to="none", use_cpu=True, bf16=False,
                      logging_steps=1, save_strategy="no", disable_tqdm=True)  # fmt: skip
    # The same reward model passed as a model: TRL's own path glues prompt + completion, no [CLS]/[SEP].
    trainer = GRPOTrainer(model=str(policy), reward_funcs=[reward, str(tiny_model_dir)], args=args,
                          train_dataset=dataset)  # fmt: skip
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "rewards/q2_reward/mean" in entry]
    assert len(logs) == 2 and len(seen) == 2
    independent = RewardScorer.from_pretrained(tiny_model_dir)
    for log, (prompts, completions, scores) in zip(logs, seen, strict=True):
        np.testing.assert_allclose(scores, independent.score(prompts, completions), atol=1e-6, rtol=0)
        assert log["rewards/q2_reward/mean"] == pytest.approx(float(np.mean(scores)), abs=1e-6)
        # TRL's built-in model path scores the same completions differently (another encoding).
        (trl_path,) = [k for k in log if k.startswith("rewards/") and k.endswith("/mean") and "q2_reward" not in k]
        assert abs(log[trl_path] - log["rewards/q2_reward/mean"]) > 1e-4


def test_the_readme_grpo_example_runs_as_written_on_tiny_models(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    from helpers import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Use it in RLHF") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    policy = build_tiny_causal_lm(tmp_path / "policy")
    # Only names and sizes change: the tiny models, a temporary output folder, 2 steps of short completions.
    replacements = [
        ('"reward_model"', repr(str(tiny_model_dir))),
        ('"Qwen/Qwen2.5-0.5B-Instruct"', repr(str(policy))),
        ('"grpo_out"', repr(str(tmp_path / "grpo_out"))),
        ("max_completion_length=64", "max_completion_length=6"),
        ("max_steps=10", "max_steps=2"),
    ]
    for old, new in replacements:
        assert old in code, old
        code = code.replace(old, new)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    logged = [entry for entry in namespace["trainer"].state.log_history if "rewards/q2_reward/mean" in entry]
    assert logged and namespace["trainer"].state.global_step == 2
