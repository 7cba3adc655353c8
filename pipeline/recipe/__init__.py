"""The recipe: the dataclasses of every key (`ScriptArguments`, `PipelineRewardConfig`, TRL's `ModelConfig`), filled
by TRL's `TrlParser` from a YAML recipe and command-line overrides, and validated in one place before any work starts.

May import `pipeline.core` only.
"""
