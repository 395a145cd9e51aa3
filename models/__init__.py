"""The model catalog: one recipe per supported model.

Exports ``CATALOG`` (name -> ModelRecipe), ``DEFAULT_MODEL``, ``ModelRecipe`` and ``get_recipe``.
To add a model, write a module beside these with a ``RECIPE`` and list it below.
"""

from glass_onnx.models import gemma3_270m, smollm2_135m
from glass_onnx.models.recipe import ModelRecipe

CATALOG: dict[str, ModelRecipe] = {r.name: r for r in (smollm2_135m.RECIPE, gemma3_270m.RECIPE)}
DEFAULT_MODEL = smollm2_135m.RECIPE.name


def get_recipe(name: str) -> ModelRecipe | None:
    return CATALOG.get(name)


__all__ = ["CATALOG", "DEFAULT_MODEL", "ModelRecipe", "get_recipe"]
