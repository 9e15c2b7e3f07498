"""System-level moderation: the policies of the model, of the project and of Le Chat, applied by the platform
to every chat request, whatever the client sends.

Input is screened before anything is decoded: PII masked, the last user message classified, then the request
blocked (400 `content_policy`), answered with the policy's refusal instead of the model, or flagged and let
through. Output is screened as it is written: text is held until a sentence ends, then everything written so
far is classified and the sentence released (masked) or the reply stopped; a stream holds back at most one
sentence, and a blocked stream ends with an error event, never a silent cut.

Every block, flag, refusal and mask is written to the audit trail before the reply that it shaped goes out.

Example::

    policies = guard.policies_for(entry, principal, is_chat_app=False)
    outcome = await guard.screen_input(request, policies, principal, entry.id)   # raises ContentPolicyError
    screen = guard.output_screen(policies, principal, entry.id, request.messages)
    verdict = await screen.check("Sure, here is how ...")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from galerne.catalog import Catalog, ModelEntry, PolicySpec
from galerne.errors import ContentPolicyError
from galerne.inference.types import ChatMessage, GenerationRequest, Role
from galerne.moderation_categories import Category
from galerne.services.auth import Principal
from galerne.services.moderation.audit import Finding, ModerationAudit
from galerne.services.moderation.classifier import CategoryScores, ModerationClassifier, with_detected_pii
from galerne.services.moderation.pii import find_pii, mask_pii

_SEVERITY = {"block": 3, "refuse": 2, "flag": 1, "mask": 0}


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    name: str
    spec: PolicySpec


@dataclass(slots=True)
class Verdict:
    """What the policies decided about one text: the strongest action taken, and every finding."""

    findings: list[Finding] = field(default_factory=list)

    @property
    def action(self) -> str | None:
        acted = [f.action for f in self.findings if f.action != "mask"]
        return max(acted, key=_SEVERITY.__getitem__) if acted else None

    def describe(self) -> str:
        """`action:category,...` for the usage record."""
        return ";".join(sorted({f"{f.action}:{f.category.value}" for f in self.findings}))


@dataclass(slots=True)
class InputOutcome:
    request: GenerationRequest
    verdict: Verdict
    refusal: str | None = None  # a `refuse` policy answers instead of the model


class PolicyGuard:
    def __init__(self, classifier: ModerationClassifier, catalog: Catalog, audit: ModerationAudit) -> None:
        self._classifier = classifier
        self._catalog = catalog
        self._audit = audit

    def policies_for(self, entry: ModelEntry, principal: Principal, *, is_chat_app: bool) -> tuple[ActivePolicy, ...]:
        """The model's policy, the project's, and Le Chat's for its traffic; each applies on its own."""
        names = [entry.policy, principal.policy, self._catalog.chat_policy if is_chat_app else None]
        unique = dict.fromkeys(name for name in names if name)
        return tuple(ActivePolicy(name, self._catalog.policy(name)) for name in unique)

    async def screen_input(
        self, request: GenerationRequest, policies: Sequence[ActivePolicy], principal: Principal, model: str
    ) -> InputOutcome:
        """Mask, classify and decide on the request's input; raises `ContentPolicyError` when a policy blocks it.

        The policies' system prompts come first, before the conversation's own system message.
        """
        messages = list(request.messages)
        verdict = Verdict()
        masking = [policy for policy in policies if policy.spec.mask_pii]
        original_last = _last_user_text(messages)
        if masking:
            for index, message in enumerate(messages):
                found = find_pii(message.content) if message.role in (Role.USER, Role.TOOL) else []
                if found:
                    messages[index] = replace(message, content=mask_pii(message.content, found))
                    verdict.findings.append(Finding(masking[0].name, "input", Category.PII, 1.0, "mask"))
        screening = [policy for policy in policies if policy.spec.screen_input]
        if screening and original_last is not None:
            scores = await self.scores(messages, principal, original_last)
            verdict.findings += _findings(scores, screening, "input", lambda spec: spec.screen_input)
        prompts = [policy.spec.system_prompt for policy in policies if policy.spec.system_prompt]
        outcome = InputOutcome(replace(request, messages=_with_policy_prompts(messages, prompts)), verdict)
        await self.record(verdict, policies, principal, model, original_last)
        if verdict.action == "block":
            raise ContentPolicyError(_blocked_message("the request", verdict), param="messages")
        if verdict.action == "refuse":
            outcome.refusal = _refusal_of(verdict, policies)
        return outcome

    def output_screen(
        self, policies: Sequence[ActivePolicy], principal: Principal, model: str, context: Sequence[ChatMessage]
    ) -> OutputScreen | None:
        """A screen for the reply when a policy screens or masks output; None when none does."""
        acting = [policy for policy in policies if policy.spec.screen_output or policy.spec.mask_pii]
        if not acting:
            return None
        return OutputScreen(self, acting, principal, model, context)

    async def scores(self, conversation: Sequence[ChatMessage], principal: Principal, raw_text: str) -> CategoryScores:
        """The classifier's scores, with `pii` from the detectors run on the unmasked text."""
        scores = await self._classifier.classify(
            [m for m in conversation if m.role is not Role.SYSTEM] or list(conversation), principal
        )
        return with_detected_pii(scores, raw_text)

    async def record(
        self,
        verdict: Verdict,
        policies: Sequence[ActivePolicy],
        principal: Principal,
        model: str,
        text: str | None,
    ) -> None:
        keeps_text = {policy.name for policy in policies if policy.spec.keep_text}
        for name in dict.fromkeys(finding.policy for finding in verdict.findings):
            findings = [finding for finding in verdict.findings if finding.policy == name]
            await self._audit.record(findings, principal, model, text=text if name in keeps_text else None)


class OutputScreen:
    """Screens one run's reply: `check` classifies text written so far; `mask` hides PII in released text."""

    def __init__(
        self,
        guard: PolicyGuard,
        policies: Sequence[ActivePolicy],
        principal: Principal,
        model: str,
        context: Sequence[ChatMessage],
    ) -> None:
        self._guard = guard
        self._policies = tuple(policies)
        self._screening = [policy for policy in policies if policy.spec.screen_output]
        self._masks = any(policy.spec.mask_pii for policy in policies)
        self._principal = principal
        self._model = model
        self._context = [message for message in context if message.role is not Role.SYSTEM]
        self.verdict = Verdict()

    async def mask(self, text: str) -> str:
        """`text` with its PII replaced by placeholders when a policy masks; the mask is audited."""
        found = find_pii(text) if self._masks else []
        if not found:
            return text
        masking = next(policy for policy in self._policies if policy.spec.mask_pii)
        finding = Finding(masking.name, "output", Category.PII, 1.0, "mask")
        self.verdict.findings.append(finding)
        await self._guard.record(Verdict([finding]), self._policies, self._principal, self._model, text)
        return mask_pii(text, found)

    async def check(self, text: str) -> str | None:
        """The action the policies take on a reply that reads `text` so far (None: let it through);
        findings are recorded in the audit trail and kept in `verdict` for the usage record."""
        if not self._screening or not text.strip():
            return None
        conversation = [*self._context, ChatMessage(Role.ASSISTANT, text)]
        scores = await self._guard.scores(conversation, self._principal, text)
        found = Verdict(_findings(scores, self._screening, "output", lambda spec: spec.screen_output))
        new = [f for f in found.findings if (f.policy, f.category, f.action) not in self._seen()]
        await self._guard.record(Verdict(new), self._policies, self._principal, self._model, text)
        self.verdict.findings += new
        return found.action

    def refusal(self) -> str:
        return _refusal_of(self.verdict, self._policies)

    def blocked_error(self) -> ContentPolicyError:
        return ContentPolicyError(_blocked_message("the answer", self.verdict), param=None)

    def _seen(self) -> set[tuple[str, Category, str]]:
        return {(f.policy, f.category, f.action) for f in self.verdict.findings}


def _findings(
    scores: CategoryScores,
    policies: Sequence[ActivePolicy],
    direction: str,
    categories_of: Callable[[PolicySpec], tuple[Category, ...]],
) -> list[Finding]:
    findings = []
    for policy in policies:
        for category in categories_of(policy.spec):
            if policy.spec.mask_pii and category is Category.PII:
                continue  # masked instead
            score = scores.scores.get(category, 0.0)
            if score >= policy.spec.threshold_of(category):
                findings.append(Finding(policy.name, direction, category, score, policy.spec.action))
    return findings


def _with_policy_prompts(messages: list[ChatMessage], prompts: list[str]) -> tuple[ChatMessage, ...]:
    """The policies' system prompts before the conversation's own system message, in one system message:
    some chat templates keep only the first."""
    if not prompts:
        return tuple(messages)
    if messages and messages[0].role is Role.SYSTEM:
        first = replace(messages[0], content="\n\n".join([*prompts, messages[0].content]))
        return (first, *messages[1:])
    return (ChatMessage(Role.SYSTEM, "\n\n".join(prompts)), *messages)


def _last_user_text(messages: Sequence[ChatMessage]) -> str | None:
    return next((m.content for m in reversed(messages) if m.role is Role.USER), None)


def _refusal_of(verdict: Verdict, policies: Sequence[ActivePolicy]) -> str:
    refusing = {f.policy for f in verdict.findings if f.action == "refuse"}
    return next(policy.spec.refusal for policy in policies if policy.name in refusing)


def _blocked_message(what: str, verdict: Verdict) -> str:
    categories = ", ".join(sorted({f.category.value for f in verdict.findings if f.action == "block"}))
    return f"{what} was blocked by this platform's moderation policy (categories: {categories})"
