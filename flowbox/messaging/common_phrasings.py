"""Common phrasings of the conversational moves nearly every flow has: greeting, saying goodbye,
thanking, asking for a person, and answering a yes/no question.

A flow author writes six examples for "Goodbye"; customers write "laters", "ttyl", "catch you
later". One embedding of a handful of examples cannot reach slang it has never seen, so an intent
whose own examples are clearly one of these moves borrows the phrasings below
(``matcher.IntentIndex``): they count as its examples when a message is matched, but the model
is still calibrated on the flow's own examples alone (``intents.Features``). Which intent is which
move comes from its examples (``assign``), never from its title or id, and a move goes to at most
one intent of the same level (the top-level intents, or one step's children), so two intents the
author set apart are never pulled together. Only English phrasings: a flow in another language
matches no move and keeps its own examples only.
"""

from __future__ import annotations

import numpy as np

PHRASINGS: dict[str, tuple[str, ...]] = {
    "greeting": (
        "hi", "hello", "hey", "hiya", "heya", "howdy", "hi there", "hello there", "hey there", "good morning",
        "good afternoon", "good evening", "morning", "evening", "greetings", "yo", "sup", "what's up", "hey, how are you?",
        "hi, how's it going", "hello, anyone there?", "is anybody there?", "hi again", "hello, I have a question",
        "hey, quick question", "hola", "g'day", "hullo", "hey hey", "good day to you",
    ),
    "goodbye": (
        "bye", "goodbye", "bye bye", "bye for now", "see you", "see you later", "see ya", "see you soon",
        "catch you later", "talk to you later", "talk soon", "ttyl", "later", "laters", "take care",
        "have a nice day", "have a good one", "good night", "night night", "farewell", "cheerio", "ciao", "adios",
        "I'm off", "gotta go", "I have to go now", "that's all for today", "that's everything, bye",
        "nothing else, goodbye", "signing off", "until next time",
    ),
    "thanks": (
        "thanks", "thank you", "thank you so much", "thanks a lot", "thanks a million", "many thanks",
        "thanks very much", "much appreciated", "appreciate it", "I appreciate your help", "cheers", "cheers mate",
        "ta", "ta very much", "thx", "ty", "nice one, thanks", "great, thanks", "perfect, thank you",
        "awesome, thanks", "brilliant, thanks", "that's helpful", "that helped a lot", "you've been very helpful",
        "thanks for your help", "thanks for sorting that out", "lovely, thank you", "you're a star",
        "thank you kindly",
    ),
    "person": (
        "talk to a human", "speak to a person", "I want a real person", "human please", "agent", "live agent",
        "representative", "customer service representative", "operator", "can I speak to someone",
        "connect me to an agent", "transfer me to a person", "put me through to a human",
        "I'd like to talk to a member of staff", "let me talk to your manager", "is there a real person I can chat with",
        "get me a human", "I want to talk to someone real", "I don't want a bot, I want a person",
        "I need to speak with customer support", "chat with support staff", "escalate this to a person",
        "human agent", "someone from your team", "can a person help me", "you're not helping, I need a human",
    ),
    "yes": (
        "yes", "yeah", "yep", "yup", "yes please", "sure", "sure thing", "of course", "certainly", "absolutely",
        "definitely", "ok", "okay", "alright", "go ahead", "please do", "do it", "sounds good", "that's right",
        "correct", "that's correct", "affirmative", "why not", "let's do it", "I'd like that", "yes, go on",
        "indeed", "fine by me", "ok let's go", "yes that's it",
    ),
    "no": (
        "no", "nope", "nah", "no thanks", "no thank you", "not now", "not right now", "maybe later", "not really",
        "I don't think so", "never mind", "nevermind", "please don't", "not today", "I'll pass", "no way",
        "negative", "I'd rather not", "hold off", "not at the moment", "leave it", "forget it", "no need", "not yet",
        "cancel that", "no, that's wrong", "that's not right", "wrong", "don't bother",
    ),
}
# An example is a move's when one of its phrasings is at least this close (MiniLM cosine) and
# closer than any other move's; an intent is the move's when at least ``SHARE`` of its examples
# (and two) are. On the four flows of scripts/eval/intents.py the examples of the moves' intents
# reach 0.65-1.0 and no other intent has more than one example above 0.55.
CLOSE = 0.65
SHARE = 0.5
# The cosines above and matcher.PHRASING_BAR were measured with the built-in embedding model; other
# models put cosines on other scales (unrelated texts at 0.7 is common), so with one of them no
# intent borrows.
MODEL = "all-minilm-l6-v2"
MOVES = tuple(PHRASINGS)
ANSWERS = ("yes", "no")  # moves that answer a step's question: lent to a step's children only
TEXTS = [text for move in MOVES for text in PHRASINGS[move]]
MOVE_OF_TEXT = np.repeat(np.arange(len(MOVES)), [len(PHRASINGS[m]) for m in MOVES])


def assign(example_vectors: list[np.ndarray], phrasing_vectors: np.ndarray,
           groups: list[list[int]]) -> dict[int, str]:
    """Which intents (indexes into ``example_vectors``, one matrix of unit embeddings per intent)
    are which move: {intent: move}. ``phrasing_vectors`` are the embeddings of ``TEXTS``; ``groups``
    are the intents that compete with each other (a level of the flow)."""
    shares: dict[int, tuple[str, float]] = {}
    for intent, vectors in enumerate(example_vectors):
        if not len(vectors):
            continue
        similarity = vectors @ phrasing_vectors.T  # examples x phrasings
        per_move = np.stack([similarity[:, MOVE_OF_TEXT == m].max(axis=1) for m in range(len(MOVES))], axis=1)
        nearest = per_move.argmax(axis=1)
        votes = np.bincount(nearest[per_move.max(axis=1) >= CLOSE], minlength=len(MOVES))
        move = int(votes.argmax())
        share = votes[move] / len(vectors)
        if share >= SHARE and votes[move] >= 2:
            shares[intent] = (MOVES[move], float(share))
    moves: dict[int, str] = {}
    for group in groups:
        claimed: dict[str, list[tuple[float, int]]] = {}
        for intent in group:
            if intent in shares:
                move, share = shares[intent]
                claimed.setdefault(move, []).append((share, intent))
        for move, claims in claimed.items():
            claims.sort(reverse=True)
            if len(claims) == 1 or claims[0][0] > claims[1][0]:  # a tie: the author set them apart
                moves[claims[0][1]] = move
    return moves
