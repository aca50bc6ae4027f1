"""Task types: what the student is asked, how its answer is scored, how the teacher is prompted
and how the teacher's text is parsed back into examples.

A task is data (a spec YAML in configs/tasks/ or the user's own) plus one of four types in code:
  classification   {id, text, label}                       answer = the label string
  numeric          {id, question, answer}                  answer = reasoning ending in "#### N"
  multiple_choice  {id, context, choices: [...], label}    answer = the option letter
  free_text        {id, input, output}                     answer = a short text, normalised exact match
Examples inside llm2llm always use these canonical field names; the spec maps source columns to them.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, ClassVar

from llm2llm.errors import UserError

NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"


@dataclass
class Score:
    prediction: str | None  # the extracted answer, None if the output held no valid answer
    correct: bool

    @property
    def valid(self) -> bool:
        return self.prediction is not None


@dataclass
class Task:
    name: str
    spec: dict = field(repr=False)
    labels: list[str] = field(default_factory=list)

    type: ClassVar[str] = "base"
    canonical_fields: ClassVar[tuple[str, ...]] = ()
    default_max_new_tokens: ClassVar[int] = 16
    teacher_max_new_tokens: ClassVar[int] = 48  # continuation style: one example per answer
    teacher_tokens_per_example: ClassVar[int] = 40  # chat style: per example of the numbered list

    def text(self, key: str, **values: Any) -> str:
        """A template from the spec (falling back to the type's default) filled with values."""
        template = self.spec.get("templates", {}).get(key) or DEFAULT_TEMPLATES[self.type].get(key) or NOTES[key]
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError) as e:
            raise UserError(
                f"task '{self.name}': template '{key}' is not a valid format string ({type(e).__name__}: {e}); "
                f"its placeholders are {', '.join('{' + v + '}' for v in values)}, and literal braces are written "
                "{{ }}"
            ) from None

    # --- data ------------------------------------------------------------------------------
    def problem(self, example: dict) -> str | None:
        """What is wrong with an example (field and reason), or None if it is valid."""
        for name in self.canonical_fields:
            value = example.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                return f"field '{self.source_field(name)}' is missing or empty"
        return None

    def generated_problem(self, example: dict) -> str | None:
        """What is wrong with a teacher-written example: the data checks, plus the type's own."""
        problem = self.problem(example)
        if problem is None and not any(c.isalnum() for c in self.key_text(example)):
            return "the text has no letters or digits"
        return problem

    def source_field(self, canonical: str) -> str:
        return self.spec.get("fields", {}).get(canonical, canonical)

    def stratum(self, example: dict) -> str | None:
        return None

    def max_answer_tokens(self, tokenizer) -> int:
        """Generation budget for the student's answer."""
        return self.default_max_new_tokens

    def key_text(self, example: dict) -> str:
        """The text compared for duplicates and test overlap."""
        raise NotImplementedError

    # --- student ---------------------------------------------------------------------------
    def prompt(self, example: dict) -> str:
        raise NotImplementedError

    def target(self, example: dict) -> str:
        raise NotImplementedError

    def score(self, output: str, example: dict) -> Score:
        raise NotImplementedError

    # --- teacher ---------------------------------------------------------------------------
    def teacher_continuation(self, wrong: dict, shots: list[dict]) -> str:
        raise NotImplementedError

    def teacher_chat(self, wrong: dict, count: int) -> str:
        raise NotImplementedError

    def gold_answer(self, example: dict) -> str:
        """The right answer in the form the student's answers are scored in (a label, a number, a letter)."""
        return self.score(self.target(example), example).prediction or self.target(example)

    def teacher_notes(self, wrong: dict, answer: str | None = None, earlier: list[dict] | None = None) -> str:
        """What the options append to a chat request: the student's wrong answer, to tell the right one
        from (teacher.contrast; None = off), and a request for variety listing what was already kept for
        this example (teacher.diversity; None = off)."""
        notes = []
        if answer is not None:
            notes.append(self.text("contrast_note", answer=answer, label=self.gold_answer(wrong)))
        if earlier is not None:
            notes.append(self.text("diversity_note"))
            if earlier:
                listed = "".join(f"- {self.key_text(ex)}\n" for ex in earlier)
                notes.append(self.text("diversity_earlier", examples=listed).rstrip())
        return "".join(f"\n\n{note}" for note in notes)

    def seed_context(self, shown: list[dict]) -> str:
        """teacher.show_seed's preamble: seed examples with their right answers, one per line."""
        listed = "".join(f"- {self.key_text(ex)}{ANSWER_MARK}{self.gold_answer(ex)}\n" for ex in shown)
        return self.text("seed_context", examples=listed.rstrip()) + "\n\n"

    def teacher_paraphrase(self, example: dict, style: str, count: int) -> str:
        """AugGPT: ask for paraphrases of an example (one per completion in continuation style)."""
        raise UserError(
            f"task '{self.name}' ({self.type}): paraphrasing (method auggpt) is implemented for classification tasks "
            "only"
        )

    def teacher_stop(self, style: str) -> list[str]:
        return ["\n"] if style == "continuation" else []

    def teacher_list_stop(self, style: str, asked: int) -> list[str]:
        """Stop strings at the list item after the last one asked for, where a chat answer is a numbered
        list: asked for one paraphrase, the teacher goes on to a 4-5 item list until the token limit."""
        return []

    def teacher_token_budget(self, style: str, count: int) -> int:
        """New tokens for one teacher request: one example in continuation style, `count` examples
        plus list markers in chat style (an answer cut by this limit loses its last example)."""
        return self.teacher_max_new_tokens if style == "continuation" else self.teacher_tokens_per_example * count + 16

    def parse_teacher(self, text: str, wrong: dict, style: str) -> list[dict]:
        """Examples found in the teacher's text; they inherit what the prompt fixed (e.g. the label)."""
        raise NotImplementedError


# An item number: "1." or "1)", or "Line 1:", the form the CPU teacher sometimes answers a list request in
ITEM_NUMBER = r"(?:\d+[.)]|[Ll]ine\s+\d+\s*:)"


def _clean_line(line: str) -> str:
    return re.sub(rf"^\s*(?:[-*•]|{ITEM_NUMBER})\s*", "", line).strip().strip('"').strip()


def _numbered_items(text: str) -> list[str]:
    return [_clean_line(m) for m in re.findall(rf"^\s*{ITEM_NUMBER}\s*(.+)$", text, flags=re.M)]


def _listed_items(text: str) -> list[str]:
    """A chat answer's items: its numbered list, else its bulleted list, else a one-line answer."""
    items = _numbered_items(text) or [_clean_line(m) for m in re.findall(r"^\s*[-*•]\s+(.+)$", text, flags=re.M)]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not items and len(lines) == 1:
        items = [_clean_line(lines[0])]
    return items


def restyle(text: str, steps: list[str]) -> str:
    """Bring a teacher-written text to the data's surface style (task spec `generated_text`)."""
    for step in steps:
        if step == "lowercase":
            text = text.lower()
        elif step == "strip_punctuation":  # keeps apostrophes inside words ("what's") and decimal points
            text = re.sub(r"(?<![\w])'|'(?![\w])|[^\w\s'.]|\.(?!\d)", " ", text)
        elif step == "space_punctuation":  # "Who wrote Hamlet?" -> "Who wrote Hamlet ?"
            text = re.sub(r"\s*([?!,;:])", r" \1", text)
        text = " ".join(text.split())
    return text


class ClassificationTask(Task):
    type = "classification"
    canonical_fields = ("id", "text", "label")

    def problem(self, example: dict) -> str | None:
        problem = super().problem(example)
        if problem is None and example["label"] not in self.labels:
            return (
                f"field '{self.source_field('label')}' has label {example['label']!r}, "
                f"which is not one of the task's labels ({', '.join(self.labels)})"
            )
        return problem

    def generated_problem(self, example):
        problem = super().generated_problem(example)
        min_words = int(self.spec.get("min_generated_words", 2))
        if problem is None and sum(any(c.isalnum() for c in word) for word in example["text"].split()) < min_words:
            return f"text has fewer than {min_words} words (spec key min_generated_words)"
        echoed = self.echoed_label(example["text"])
        if problem is None and echoed:
            return f"the text names the label {echoed} as a word: the teacher echoed the label, not a request"
        return problem

    def echoed_label(self, text: str) -> str | None:
        """A compound label (SearchCreativeWork, book_restaurant) written into the text as one word, as
        this teacher does ("searchcreativework for a cookbook"). Plain-word labels (positive, LOC) may
        be words of a real example, so only compound ones count."""
        words = set(re.findall(r"[a-z0-9]+", text.lower()))
        compound = [label for label in self.labels if re.search(r"[a-z][A-Z]|_", label)]
        return next((label for label in compound if re.sub(r"[^a-z0-9]", "", label.lower()) in words), None)

    def stratum(self, example):
        return example["label"]

    def max_answer_tokens(self, tokenizer):
        # The longest label plus room for a stray token; stops a rambling student early.
        return max(len(tokenizer(label, add_special_tokens=False)["input_ids"]) for label in self.labels) + 2

    def key_text(self, example):
        return example["text"]

    def prompt(self, example):
        return self.text("student", labels=", ".join(self.labels), text=example["text"])

    def target(self, example):
        return example["label"]

    def score(self, output, example):
        first = output.strip().splitlines()[0].strip().strip(string.punctuation + " ") if output.strip() else ""
        prediction = first if first in self.labels else None
        return Score(prediction, prediction == example["label"])

    def teacher_continuation(self, wrong, shots):
        lines = "".join(f"- {ex['text']}\n" for ex in [*shots, wrong])
        return self.text("teacher_continuation", label=wrong["label"], examples=lines)

    def teacher_chat(self, wrong, count):
        return self.text("teacher_chat", label=wrong["label"], text=wrong["text"], count=count)

    def teacher_list_stop(self, style, asked):
        return [f"\n{asked + 1}.", f"\n{asked + 1})", f"\nLine {asked + 1}:"] if style == "chat" else []

    def teacher_paraphrase(self, example, style, count):
        if style == "continuation":
            return self.text("paraphrase_continuation", label=example["label"], text=example["text"])
        return self.text("paraphrase_chat", label=example["label"], text=example["text"], count=count)

    def parse_teacher(self, text, wrong, style):
        candidates = [_clean_line(text.split("\n")[0])] if style == "continuation" else _listed_items(text)
        # a teacher shown "text => label" lines (teacher.show_seed) may label its own items the same way
        candidates = [c.split(ANSWER_MARK.strip())[0].rstrip() for c in candidates]
        steps = self.spec.get("generated_text") or []
        return [{"text": restyle(c, steps), "label": wrong["label"]} for c in candidates if restyle(c, steps)]


def final_number(text: str) -> str | None:
    """The number on the last '#### N' line, sign kept, thousands separators dropped."""
    found = re.findall(rf"####\s*\$?\s*({NUMBER})", text)
    return found[-1].replace(",", "") if found else None


def numbers_equal(a: str, b: str) -> bool:
    try:
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    except ValueError:
        return False


# LaTeX an instruct teacher puts in a worked answer, as plain text ("\\( 3 \\times 4 = 12 \\)" -> "3 * 4 = 12").
LATEX = [
    (r"\$(?=\S)([^$\n]*?\\[a-z]+[^$\n]*?|[^$\s]+)\$", r"\1"),  # inline math, not two prices
    (r"\\[()\[\]]", ""),
    (r"\\(?:times|cdot)", "*"),
    (r"\\div", "/"),
    (r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)"),
    (r"\\(?:text|textbf|mathrm|boxed)\{([^{}]*)\}", r"\1"),
    (r"\\[,;! ]", " "),
    (r"\\\$", "$"),
]


def plain_text(text: str, labels: tuple[str, str]) -> str:
    """A chat teacher's markdown made plain before the pair parser reads it. Bold markers and the
    template's placeholders ("#### <number>") go; headings either carry a block label ("### Problem 1:",
    "#### Question:" -> "Question:"; "#### Calculation:" -> "Answer:"), a final answer ("#### 56",
    "#### Answer: 18.51" -> "#### 18.51") or nothing (dropped); "Question 2:" and "Solution:" become
    the labels; LaTeX becomes plain arithmetic."""
    first, second = labels
    starts = rf"(?:{first}|Problem|Example)\s*\d*\s*[:.]?"
    answers = rf"(?:{second}|Solution|Calculation)\s*\d*\s*:"
    text = re.sub(r"(?:#+\s*)?<[^<>\n]{1,20}>", "", text.replace("**", "").replace("__", ""))
    lines = []
    for line in text.splitlines():
        heading = re.match(r"\s*#+\s*(.*)", line)
        rest = heading.group(1) if heading else line
        final = re.fullmatch(rf"(?:{answers}\s*)?(\$?\s*(?:{NUMBER}))\s*\S{{0,12}}", rest.strip())
        if heading and final:  # "#### 56", "#### Answer: 18.51": the final answer
            line = f"#### {final.group(1)}"
        elif re.match(rf"\s*(?:\d+[.)]\s*)?{starts}", rest, flags=re.I):
            line = re.sub(rf"^\s*((?:\d+[.)]\s*)?){starts}", rf"\1{first}:", rest, flags=re.I)
        elif re.match(rf"\s*{answers}", rest, flags=re.I):
            line = re.sub(rf"^\s*{answers}", f"{second}:", rest, flags=re.I)
        elif heading:
            continue  # any other heading ("## Solution steps")
        lines.append(line)
    text = "\n".join(lines)
    for pattern, replacement in LATEX:
        text = re.sub(pattern, replacement, text)
    return text


class PairTeacher:
    """The teacher side of a task whose example is an input and an answer (numeric, free text):
    blocks of "<In>: ...\n<Out>: ..." to continue, or a chat request for `count` such pairs,
    split back into pairs at each "<In>:" (numbered or not); the subclass parses one block."""

    pair_fields = ("input", "output")  # the example's fields, also the chat template's placeholders
    pair_labels = ("Input", "Output")  # how the blocks name them

    def teacher_continuation(self, wrong, shots):
        (in_label, out_label), field = self.pair_labels, self.pair_fields[0]
        blocks = "".join(f"{in_label}: {ex[field]}\n{out_label}: {self.target(ex)}\n\n" for ex in [*shots, wrong])
        return self.text("teacher_continuation", examples=blocks)

    def teacher_chat(self, wrong, count):
        field, answer = self.pair_fields
        return self.text("teacher_chat", **{field: wrong[field], answer: self.target(wrong)}, count=count)

    def teacher_stop(self, style):
        return [f"\n{self.pair_labels[0]}:", "\n\n\n"] if style == "continuation" else []

    def parse_teacher(self, text, wrong, style):
        in_label = self.pair_labels[0]
        if style == "continuation":
            text = f"{in_label}: " + text
        text = plain_text(text, self.pair_labels)
        blocks = re.split(rf"(?m)^\s*(?:\d+[.)]\s*)?{in_label}:\s*", text)[1:]
        return [example for example in map(self.parse_pair, blocks) if example]

    def parse_pair(self, block: str) -> dict | None:
        raise NotImplementedError


class NumericTask(PairTeacher, Task):
    type = "numeric"
    canonical_fields = ("id", "question", "answer")
    pair_fields = ("question", "answer")
    pair_labels = ("Question", "Answer")
    default_max_new_tokens = 256
    teacher_max_new_tokens = 320
    teacher_tokens_per_example = 320

    def problem(self, example):
        problem = super().problem(example)
        if problem is None and final_number(example["answer"]) is None:
            return f"field '{self.source_field('answer')}' has no final '#### <number>' line"
        return problem

    def key_text(self, example):
        return example["question"]

    def prompt(self, example):
        return self.text("student", question=example["question"])

    def target(self, example):
        return re.sub(r"<<[^>]*>>", "", example["answer"]).strip()  # drop calculator annotations

    def score(self, output, example):
        prediction = final_number(output)
        gold = final_number(example["answer"])
        return Score(prediction, prediction is not None and numbers_equal(prediction, gold))

    def parse_pair(self, block):
        final = r"####\s*\$?\s*(?:" + NUMBER + ")"
        match = re.match(rf"(.+?)\n\s*Answer:\s*(.+?{final})", block, flags=re.S)
        if not match:  # no "Answer:" label: the problem, then its "#### N" line
            match = re.match(rf"(.+?)\n\s*({final})", block, flags=re.S)
        if not match:  # a worked answer (after "Answer:" or a blank line) without "#### N": its last computed value
            worked = re.match(r"(.+?)\n\s*(?:Answer:\s*|\n)(.+)", block.strip(), flags=re.S)
            values = re.findall(rf"=\s*\$?\s*({NUMBER})", worked.group(2)) if worked else []
            if not values:
                return None
            return {"question": worked.group(1).strip(), "answer": f"{worked.group(2).strip()}\n#### {values[-1]}"}
        return {"question": match.group(1).strip(), "answer": match.group(2).strip()}


def normalise_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


class FreeTextTask(PairTeacher, Task):
    """A short free-text answer (an entity, a phrase, a normalised form), scored by exact match
    after SQuAD's normalisation (spec `match: exact` compares the stripped strings instead)."""

    type = "free_text"
    canonical_fields = ("id", "input", "output")
    default_max_new_tokens = 32
    teacher_max_new_tokens = 128
    teacher_tokens_per_example = 128

    def _same(self, a: str, b: str) -> bool:
        if self.spec.get("match", "normalised") == "exact":
            return a.strip() == b.strip()
        return normalise_answer(a) == normalise_answer(b)

    def max_answer_tokens(self, tokenizer):
        return int(self.spec.get("max_answer_tokens", self.default_max_new_tokens))

    def key_text(self, example):
        return str(example["input"])

    def prompt(self, example):
        return self.text("student", input=example["input"])

    def target(self, example):
        return str(example["output"]).strip()

    def score(self, output, example):
        first = output.strip().splitlines()[0].strip() if output.strip() else ""
        return Score(first or None, bool(first) and self._same(first, self.target(example)))

    def parse_pair(self, block):
        match = re.match(r"(.+?)\n\s*Output:\s*(.+)", block.strip(), flags=re.S)
        if not (match and match.group(2).strip()):
            return None
        return {"input": match.group(1).strip(), "output": match.group(2).strip().splitlines()[0].strip()}


LETTERS = "ABCDEFGHIJ"


class MultipleChoiceTask(Task):
    type = "multiple_choice"
    canonical_fields = ("id", "context", "choices", "label")
    default_max_new_tokens = 4
    teacher_max_new_tokens = 512
    teacher_tokens_per_example = 512

    @property
    def num_choices(self) -> int:
        return int(self.spec.get("num_choices", 5))

    def problem(self, example):
        problem = super().problem(example)
        if problem:
            return problem
        choices = example["choices"]
        if (
            not isinstance(choices, list)
            or len(choices) != self.num_choices
            or not all(isinstance(c, str) and c.strip() for c in choices)
        ):
            return f"field '{self.source_field('choices')}' must be a list of {self.num_choices} non-empty strings"
        if not isinstance(example["label"], int) or not 0 <= example["label"] < self.num_choices:
            return (
                f"field '{self.source_field('label')}' must be an option index 0..{self.num_choices - 1}, "
                f"got {example['label']!r}"
            )
        return None

    def stratum(self, example):
        return str(example["label"])

    def key_text(self, example):
        return example["context"]

    def _options(self, example) -> str:
        return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(example["choices"]))

    def prompt(self, example):
        return self.text(
            "student",
            context=example["context"],
            options=self._options(example),
            letters=", ".join(LETTERS[: self.num_choices]),
        )

    def target(self, example):
        return LETTERS[example["label"]]

    def score(self, output, example):
        match = re.match(rf"\s*\(?([{LETTERS[: self.num_choices]}])\b", output)
        prediction = match.group(1) if match else None
        return Score(prediction, prediction == self.target(example))

    def _item(self, example) -> str:
        return f"Excerpt: {example['context']}\n{self._options(example)}\nAnswer: {self.target(example)}\n\n"

    def teacher_continuation(self, wrong, shots):
        return self.text("teacher_continuation", examples="".join(self._item(ex) for ex in [*shots, wrong]))

    def teacher_chat(self, wrong, count):
        return self.text("teacher_chat", item=self._item(wrong).strip(), count=count)

    def teacher_stop(self, style):
        return ["\nExcerpt:", "\n\n\n"] if style == "continuation" else []

    def parse_teacher(self, text, wrong, style):
        if style == "continuation":
            text = "Excerpt: " + text
        letters = LETTERS[: self.num_choices]
        examples = []
        for block in re.split(r"(?m)^\s*(?:\d+[.)]\s*)?Excerpt:\s*", text)[1:]:
            match = re.match(
                r"(.+?)\n" + "".join(rf"\s*{c}[.)]\s*(.+?)\n" for c in letters) + rf"\s*Answer:\s*\(?([{letters}])",
                block,
                flags=re.S,
            )
            if match:
                *parts, answer = match.groups()
                examples.append(
                    {
                        "context": parts[0].strip(),
                        "choices": [p.strip() for p in parts[1:]],
                        "label": letters.index(answer),
                    }
                )
        return examples


TASK_TYPES: dict[str, type[Task]] = {
    t.type: t for t in (ClassificationTask, NumericTask, MultipleChoiceTask, FreeTextTask)
}

# Between a shown seed example and its answer (teacher.show_seed); a teacher may copy it into its own items.
ANSWER_MARK = " => "

# The teacher options' additions to a chat request (teacher.contrast, teacher.diversity), for every type
# unless DEFAULT_TEMPLATES or a spec's `templates:` has its own.
NOTES = {
    "contrast_note": 'The student answered "{answer}" instead of "{label}". Write the new examples so that the '
    'right answer is clearly "{label}" and could not be mistaken for "{answer}".',
    "diversity_note": "Make the new examples differ from each other and from the one above: vary the wording, the "
    "sentence structure, the length and the names, places, numbers and things they mention.",
    "diversity_earlier": "Already written for this example (do not repeat or imitate these):\n{examples}",
    "seed_context": "Examples from the same data set, each with its correct answer:\n{examples}",
}

# Defaults per type; a spec's `templates:` mapping overrides any of them.
DEFAULT_TEMPLATES = {
    "classification": {
        "student": "Classify the text. Answer with exactly one of: {labels}.\nText: {text}",
        "teacher_continuation": 'Examples of texts labelled "{label}":\n{examples}-',
        "teacher_chat": (
            'A student model mislabelled this text, whose correct label is "{label}":\n{text}\n\n'
            'Write {count} new, different texts that also have the label "{label}" and test the same '
            "skill. Reply with a numbered list, one text per line, and nothing else."
        ),
        "paraphrase_continuation": 'Texts labelled "{label}", each saying the same as the first in other words:\n- '
        "{text}\n-",
        "paraphrase_chat": (
            'Paraphrase this text, whose label is "{label}", {count} times, keeping its meaning:\n{text}\n\n'
            "Reply with a numbered list, one paraphrase per line, and nothing else."
        ),
    },
    "numeric": {
        "student": "Solve the math problem. Reason step by step, then give the final answer on its own "
        "line as '#### <number>'.\nProblem: {question}",
        "teacher_continuation": "Math word problems with worked answers:\n\n{examples}Question:",
        "teacher_chat": (
            "A student got this math problem wrong:\nQuestion: {question}\nAnswer: {answer}\n\n"
            "Write {count} new problems that test the same skills, with other names and numbers. "
            "Show the calculation and end each answer with '#### <number>' (a plain number, no units). "
            "Use exactly this form for each:\nQuestion: <problem>\nAnswer: <calculation>\n#### <number>"
        ),
    },
    "free_text": {
        "student": "Answer with the output only, on one line.\nInput: {input}",
        "teacher_continuation": "Inputs with their expected outputs:\n\n{examples}Input:",
        "teacher_chat": (
            "A student gave a wrong output for this input:\nInput: {input}\nOutput: {output}\n\n"
            "Write {count} new inputs of the same kind that test the same thing, each with its correct output, "
            "in exactly this form:\nInput: <input>\nOutput: <output>"
        ),
    },
    "multiple_choice": {
        "student": "{context}\n\nWhich option fills the masked part?\n{options}\nAnswer with one letter ({letters}).",
        "teacher_continuation": "Multiple-choice questions with their answers:\n\n{examples}Excerpt:",
        "teacher_chat": (
            "A student answered this question wrongly:\n{item}\n\nWrite {count} new questions of the same "
            "kind, each in exactly this form:\nExcerpt: <text>\nA. <option>\nB. <option>\nC. <option>\n"
            "D. <option>\nE. <option>\nAnswer: <letter>"
        ),
    },
}
