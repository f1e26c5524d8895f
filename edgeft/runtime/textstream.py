"""Token ids to the text a client sees, piece by piece: a multi-byte character is sent whole, and
text that may be the start of a stop string is held back until it is known not to be one (OpenAI's
`stop`: the answer ends before the stop string, which is not sent)."""
from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, stops
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters of `text` given out
        self.hold = max((len(s) for s in stops), default=1) - 1

    def push(self, token: int) -> tuple[str, bool]:
        """The text to send after one more token, and whether a stop string ended the answer."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # the rest of a multi-byte character is still to come
            return "", False
        self.text = text
        found = [at for at in (text.find(s, max(0, self.sent - len(s))) for s in self.stops) if at != -1]
        if found:
            piece, self.sent = text[self.sent:min(found)], len(text)
            self.text = text[:min(found)]
            return piece, True
        end = len(text) - self.hold
        if end <= self.sent:
            return "", False
        piece, self.sent = text[self.sent:end], end
        return piece, False

    def flush(self) -> str:
        """What was held back, at the end of an answer that no stop string ended."""
        piece, self.sent = self.text[self.sent:], len(self.text)
        return piece
