"""Policy decisions that need no model: which policies apply, which action wins, where system prompts go."""

from __future__ import annotations

from galerne.catalog import Catalog, ModelEntry, PolicySpec
from galerne.inference.types import ChatMessage, Role
from galerne.moderation_categories import Category
from galerne.services.auth import Principal
from galerne.services.moderation.audit import Finding
from galerne.services.moderation.guard import PolicyGuard, Verdict, _with_policy_prompts

CATALOG = Catalog(
    models=(ModelEntry(id="m", gguf="x.gguf", policy="model"), ModelEntry(id="plain", gguf="x.gguf")),
    policies={"model": PolicySpec(screen_input=(Category.HATE,)), "project": PolicySpec(mask_pii=True),
              "chat": PolicySpec(action="refuse", screen_output=(Category.SEXUAL,))},
    chat_policy="chat",
)


def _guard() -> PolicyGuard:
    return PolicyGuard(classifier=None, catalog=CATALOG, audit=None)  # type: ignore[arg-type]


def test_the_models_the_projects_and_le_chats_policies_each_apply() -> None:
    principal = Principal(key_id="k", project_id="p", project_name="p", policy="project")
    names = [p.name for p in _guard().policies_for(CATALOG.resolve("m"), principal, is_chat_app=True)]
    assert names == ["model", "project", "chat"]
    api = [p.name for p in _guard().policies_for(CATALOG.resolve("plain"), principal, is_chat_app=False)]
    assert api == ["project"]
    bare = Principal(key_id="k", project_id="p", project_name="p")
    assert _guard().policies_for(CATALOG.resolve("plain"), bare, is_chat_app=False) == ()


def test_the_strongest_action_wins_and_masks_alone_decide_nothing() -> None:
    def finding(action: str) -> Finding:
        return Finding("p", "input", Category.HATE, 0.9, action)

    assert Verdict([finding("mask")]).action is None
    assert Verdict([finding("flag"), finding("mask")]).action == "flag"
    assert Verdict([finding("flag"), finding("refuse")]).action == "refuse"
    assert Verdict([finding("refuse"), finding("block"), finding("flag")]).action == "block"
    described = Verdict([finding("flag"), finding("mask")]).describe()
    assert described == "flag:hate_and_discrimination;mask:hate_and_discrimination"


def test_policy_prompts_go_first_in_one_system_message() -> None:
    user = ChatMessage(Role.USER, "hi")
    assert _with_policy_prompts([user], ["Be kind."]) == (ChatMessage(Role.SYSTEM, "Be kind."), user)
    own = ChatMessage(Role.SYSTEM, "You are a pirate.")
    merged = _with_policy_prompts([own, user], ["Be kind.", "No advice."])
    assert merged == (ChatMessage(Role.SYSTEM, "Be kind.\n\nNo advice.\n\nYou are a pirate."), user)
    assert _with_policy_prompts([user], []) == (user,)
