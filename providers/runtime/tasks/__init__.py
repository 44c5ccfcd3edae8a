"""Training recipes, one module per task and objective, each behind ``TrainingRecipe`` (``base.py``):

==================  ============  ==========================  ==========================
task                strategy      module                      trainer
==================  ============  ==========================  ==========================
text-generation     sft, qlora    ``text_generation.py``      TRL ``SFTTrainer``
text-generation     dpo, rlhf     ``preference.py``           TRL ``DPOTrainer``
summarization       sft, qlora    ``summarization.py``        ``Seq2SeqTrainer``
question-answering  sft           ``question_answering.py``   ``Trainer``
==================  ============  ==========================  ==========================

``qlora`` is not a recipe of its own: it is any recipe on a quantized base (``quantized.py``). To add a
cell, write a ``TrainingRecipe`` subclass and register it in ``RECIPES``; the train action
(``training.py``) does the rest (output folder, checkpoints, resume, events, manifest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import RecordError, TrainContext, TrainingRecipe
from .preference import TextGenerationDPO
from .question_answering import QuestionAnswering
from .summarization import Summarization
from .text_generation import TextGenerationSFT

if TYPE_CHECKING:
    from ..train_config import TrainConfig

#: (task, objective) -> recipe
RECIPES: dict[tuple[str, str], type[TrainingRecipe]] = {
    (cls.task, cls.objective): cls
    for cls in (TextGenerationSFT, TextGenerationDPO, Summarization, QuestionAnswering)
}


def recipe_for(config: TrainConfig) -> TrainingRecipe:
    return RECIPES[(config.task, config.objective)]()


__all__ = ["RECIPES", "RecordError", "TrainContext", "TrainingRecipe", "recipe_for"]
