"""Full-text search, the pure half: what text an event contributes, how CJK text is
made searchable, and the search syntax, rendered for SQLite FTS5 and PostgreSQL.

Chinese, Japanese and Korean are written without spaces, so a word-splitting tokenizer
sees "你好世界" as one word and a search for 你好 finds nothing (Synapse's behaviour).
Here every run of CJK characters is indexed as its single characters and its
overlapping pairs ("你 你好 好 好世 世 世界 界"), and a CJK search word becomes the AND of
its pairs: any two-character word is found, and a single character too.

The syntax is websearch's: words (all must match; stemmed, and the last one also as a
prefix, so "hel" finds "hello"), "quoted phrases", -excluded words, and OR between
groups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Event type -> (search key, content field).
INDEXED_FIELDS = {
    "m.room.message": ("content.body", "body"),
    "m.room.name": ("content.name", "name"),
    "m.room.topic": ("content.topic", "topic"),
}
ALL_KEYS = ("content.body", "content.name", "content.topic")
MAX_INDEXED_CHARS = 65_536  # of one event's text
MAX_QUERY_CHARS = 1000
MAX_QUERY_TERMS = 32

_CJK = (
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\uac00-\ud7af"  # hangul syllables
    "\U00020000-\U0002fa1f"
)
_CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD = re.compile(rf"[^\W{_CJK}]+|[{_CJK}]+")


def event_search_text(event_type: str, content: Any) -> tuple[str, str] | None:
    """(search key, text) of an event that search indexes, else None."""
    field = INDEXED_FIELDS.get(event_type)
    if field is None or not isinstance(content, dict):
        return None
    value = content.get(field[1])
    if not isinstance(value, str) or not value.strip():
        return None
    # Lone surrogates and NUL are valid in event JSON but not in a text column.
    text = value[:MAX_INDEXED_CHARS].encode("utf-8", "replace").decode("utf-8")
    return field[0], text.replace("\x00", " ")


def _cjk_tokens(run: str) -> list[str]:
    out = []
    for i, ch in enumerate(run):
        out.append(ch)
        if i + 1 < len(run):
            out.append(run[i : i + 2])
    return out


def index_text(text: str) -> str:
    """The text as the index stores it: CJK runs replaced by characters and pairs."""
    return _CJK_RUN.sub(lambda m: " " + " ".join(_cjk_tokens(m.group())) + " ", text)


@dataclass(frozen=True)
class Term:
    words: tuple[str, ...]  # one word or a phrase
    negated: bool = False
    prefix: bool = False  # the word also matches longer words it starts

    @property
    def phrase(self) -> bool:
        return len(self.words) > 1


# A query: groups joined by OR; the terms of a group are all required.
Query = list[list[Term]]


def _word_terms(word: str, negated: bool) -> list[Term]:
    """One search word as terms: CJK runs become their pairs, all required."""
    if _CJK_RUN.fullmatch(word):
        if len(word) == 1:
            return [Term((word,), negated)]
        pairs = [word[i : i + 2] for i in range(len(word) - 1)]
        if negated:  # NOT (all pairs): approximated by excluding the phrase's first pair
            return [Term((pairs[0],), True)]
        return [Term((p,)) for p in pairs]
    return [Term((word.lower(),), negated)]


def parse_query(text: str) -> Query:
    """websearch syntax -> groups of terms (empty when nothing searchable is left)."""
    text = text[:MAX_QUERY_CHARS]
    groups: Query = [[]]
    for match in re.finditer(r'(-?)"([^"]*)"?|(\S+)', text):
        if match.group(3) is not None:
            raw = match.group(3)
            if raw == "OR":
                if groups[-1]:
                    groups.append([])
                continue
            negated = raw.startswith("-") and len(raw) > 1
            words = _WORD.findall(raw[1:] if negated else raw)  # "e-mail": phrase "e mail"
        else:
            negated = match.group(1) == "-"
            words = _WORD.findall(match.group(2))
        if len(words) == 1 or any(_CJK_RUN.fullmatch(w) for w in words):
            # (CJK is indexed as interleaved characters and pairs: no phrase positions.)
            for word in words:
                groups[-1].extend(_word_terms(word, negated))
        elif words:
            groups[-1].append(Term(tuple(w.lower() for w in words), negated))
    out = [g[:MAX_QUERY_TERMS] for g in groups if any(not t.negated for t in g)]
    # The last word of each group is matched as a prefix ("hel" finds "hello", as a user types it);
    # the others as whole words, which stemming already widens ("searches" finds
    # "searching"). A prefix of a frequent word costs a merge of every word it starts.
    for group in out:
        for i in range(len(group) - 1, -1, -1):
            term = group[i]
            if not term.negated and not term.phrase:
                if not _CJK_RUN.fullmatch(term.words[0]):  # CJK is indexed whole
                    group[i] = Term(term.words, prefix=True)
                break
    return out


def positive_words(query: Query) -> set[str]:
    return {w for group in query for t in group if not t.negated for w in t.words}


# -- rendering ------------------------------------------------------------------------------


def _fts5_term(term: Term) -> str:
    if term.phrase:
        return '"' + " ".join(term.words) + '"'
    return f'"{term.words[0]}"' + ("*" if term.prefix else "")


def to_fts5(query: Query) -> str:
    """An FTS5 MATCH expression."""
    groups = []
    for group in query:
        positive = " AND ".join(_fts5_term(t) for t in group if not t.negated)
        negative = "".join(f" NOT {_fts5_term(t)}" for t in group if t.negated)
        groups.append(f"({positive}{negative})")
    return " OR ".join(groups)


def _ts_term(term: Term) -> str:
    if term.phrase:
        inner = " <-> ".join(f"'{w}'" for w in term.words)
        text = f"({inner})"
    else:
        text = f"'{term.words[0]}'" + (":*" if term.prefix else "")
    return f"!{text}" if term.negated else text


def to_tsquery(query: Query) -> str:
    """A PostgreSQL to_tsquery expression (words are \\w+ only: nothing to escape)."""
    return " | ".join("(" + " & ".join(_ts_term(t) for t in group) + ")" for group in query)


# -- highlights -----------------------------------------------------------------------------


def highlights(text: str, words: set[str]) -> set[str]:
    """Words of `text` a client should highlight: those a search word is a prefix of
    (case-insensitively), and the CJK search words it contains."""
    found: set[str] = set()
    lowered = [w.lower() for w in words]
    for token in _WORD.findall(text):
        if _CJK_RUN.fullmatch(token):
            found.update(w for w in words if _CJK_RUN.fullmatch(w) and w in token)
            continue
        low = token.lower()
        if any(low.startswith(w) for w in lowered):
            found.add(token)
    return found
