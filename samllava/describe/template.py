"""The one conversation template of the describer (LLaVA-1.5, ``conv_vicuna_v1``).

LLaVA-1.5 trains on ``"{system} USER: <image>\\n{question} ASSISTANT: {answer}</s>"``. We keep
that format and put the SASA tokens X_llava (Sec. 3.3) right after the image placeholders::

    {system} USER: <image>...<image><sasa>...<sasa>\\n{question} ASSISTANT:

Every ``<image>`` / ``<sasa>`` placeholder is one embedding position; the describer overwrites
those positions with LLaVA's projected image features and the SASA tokens.
"""
from __future__ import annotations

# LLaVA-1.5's system message (conv_vicuna_v1); pass system="" for the bare llava-hf prompt.
SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
USER = "USER:"
ASSISTANT = "ASSISTANT:"
IMAGE_TOKEN = "<image>"
SASA_TOKEN = "<sasa>"


def build_prompt(
    question: str,
    n_image_tokens: int,
    n_sasa_tokens: int,
    image_token: str = IMAGE_TOKEN,
    sasa_token: str = SASA_TOKEN,
    system: str = SYSTEM,
) -> str:
    """The prompt up to and including ``ASSISTANT:``, placeholders expanded.

    Args:
        question: the user's question; must not contain the placeholder strings.
        n_image_tokens: number of LLaVA image-feature positions (``<image>`` copies).
        n_sasa_tokens: number of SASA positions (g*g + N_t, Sec. 3.3).
    """
    if n_image_tokens < 0 or n_sasa_tokens < 0:
        raise ValueError(
            f"placeholder counts must be >= 0, got n_image_tokens={n_image_tokens}, n_sasa_tokens={n_sasa_tokens}"
        )
    for token in (image_token, sasa_token):
        if token in question:
            raise ValueError(
                f"question {question!r} contains the placeholder {token!r}; it would be replaced by features"
            )
    head = f"{system} {USER}" if system else USER
    return f"{head} {image_token * n_image_tokens}{sasa_token * n_sasa_tokens}\n{question.strip()} {ASSISTANT}"


def build_example(
    question: str,
    answer: str,
    n_image_tokens: int,
    n_sasa_tokens: int,
    *,
    eos_token: str,
    image_token: str = IMAGE_TOKEN,
    sasa_token: str = SASA_TOKEN,
    system: str = SYSTEM,
) -> tuple[str, str]:
    """A training example as ``(prompt, completion)``; the completion is `` {answer}{eos}``.

    Kept apart so that the loss (Eq. 10) can label exactly the completion's tokens.
    """
    if not answer.strip():
        raise ValueError(f"empty answer for question {question!r}")
    prompt = build_prompt(question, n_image_tokens, n_sasa_tokens, image_token, sasa_token, system)
    return prompt, f" {answer.strip()}{eos_token}"


def check_length(n_tokens: int, max_positions: int, text: str) -> None:
    """Raise ValueError when a tokenised sequence exceeds the model's position embeddings."""
    if n_tokens > max_positions:
        shown = text if len(text) <= 120 else text[:60] + " ... " + text[-60:]
        raise ValueError(
            f"sequence of {n_tokens} tokens exceeds the language model's max_position_embeddings={max_positions}: "
            f"shorten the question/answer or use fewer visual tokens (text: {shown!r})"
        )
