"""la Plateforme's nine moderation categories, shared by the catalogue (policies name them) and the services.

Each has the one-line definition the classifier prompt gives the model (Mistral's self-reflection recipe:
categories with a definition each, then one answer word) and the short word the model answers with: short,
distinct words are cheaper to score and easier for a small model than the API's long names.
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    SEXUAL = "sexual"
    HATE = "hate_and_discrimination"
    VIOLENCE = "violence_and_threats"
    DANGEROUS = "dangerous_and_criminal_content"
    SELFHARM = "selfharm"
    HEALTH = "health"
    FINANCIAL = "financial"
    LAW = "law"
    PII = "pii"


DEFINITIONS: dict[Category, str] = {
    Category.SEXUAL: "sexually explicit material or requests for it",
    Category.HATE: "attacks on or contempt for people for their origin, religion, gender, orientation or disability",
    Category.VIOLENCE: "threats, glorification of violence, or encouragement to hurt someone",
    Category.DANGEROUS: "help with crimes, weapons, drugs, hacking, fraud or other illegal or dangerous acts",
    Category.SELFHARM: "suicide, self-injury or eating disorders, encouraged or planned",
    Category.HEALTH: "asking for or giving medical diagnosis, dosage or treatment advice",
    Category.FINANCIAL: "asking for or giving personal investment, tax or financial advice",
    Category.LAW: "asking for or giving legal advice on a person's own case",
    Category.PII: "personal data of a person: address, phone, e-mail, id or account numbers, or asking for them",
}

# The word the classifier answers with for each category, and for text that is none of them.
LABELS: dict[Category, str] = {
    Category.SEXUAL: "sexual",
    Category.HATE: "hate",
    Category.VIOLENCE: "violence",
    Category.DANGEROUS: "crime",
    Category.SELFHARM: "selfharm",
    Category.HEALTH: "health",
    Category.FINANCIAL: "finance",
    Category.LAW: "law",
    Category.PII: "privacy",
}
SAFE_LABEL = "safe"
