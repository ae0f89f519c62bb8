"""De-identification of free text written into a recording (EDF+ annotations, scoring files).

Annotation text is typed by technicians and can hold anything: "Pt Jane Margaret Doe DOB
1961-07-04 MRN 12345678 tel +1-555-0100". `scrub_text` replaces every identifier it recognises by
a placeholder in square brackets before the text is stored in a `Recording`, so no tool result,
export, trace, page or log ever holds the original. The rules are patterns, not a language
model: the NER-based libraries (Presidio's default engine, scrubadub's name detector) need a
spaCy model that cannot be installed offline, and without one scrubadub removed only the e-mail
of the sentence above. Names are recognised by what introduces them ("Pt", "Patient", "Name:",
titles, "tech") and by the EDF convention of underscores for spaces ("Jane_Doe"); as the rules
cannot know every name, free text is also withheld from the language model unless a question
asks for it (see `tools.events`).

Placeholders: [NAME], [DATE], [ID], [PHONE], [EMAIL], [URL], [ADDRESS].
"""

from __future__ import annotations

import re

__all__ = ["PLACEHOLDERS", "scrub_text"]

PLACEHOLDERS = ("[NAME]", "[DATE]", "[ID]", "[PHONE]", "[EMAIL]", "[URL]", "[ADDRESS]")

_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
# A capitalised word, initial or hyphenated/apostrophe name part ("O'Neil", "Smith-Jones", "J.").
_NAME_WORD = r"(?!(?:DOB|MRN|ID|TEL|PH|DATE|BORN|AGE|SEX)\b)[A-Z][A-Za-z'\-]*\.?"
_NAME_WORDS = rf"{_NAME_WORD}(?:[ ,]+{_NAME_WORD}){{0,3}}"

# Order matters: URLs and e-mails before phone numbers and IDs (they contain digits), dates
# before phone numbers (1961-07-04 looks like a number), keyword-led fields before bare forms.
_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "[EMAIL]"),
    (re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|edu|gov|io|info|de|uk|nl|fr)\b(?:/\S*)?",
                re.IGNORECASE), "[URL]"),
    # Keyword-led fields: whatever follows "DOB", "born", "MRN", "ID", ... up to the next field.
    (re.compile(rf"\b(?:dob|d\.o\.b\.?|date of birth|birth ?date|born)\b[\s:=#-]*"
                rf"(?:\d{{1,4}}[./\- ]\d{{1,2}}[./\- ]\d{{1,4}}|\d{{1,2}}[\s\-]?{_MONTHS}[\s\-,]*\d{{2,4}}|{_MONTHS}\s+\d{{1,2}},?\s+\d{{2,4}}|\d{{6,8}})",
                re.IGNORECASE), "DOB [DATE]"),
    (re.compile(r"\b(?:mrn|mr#|mr no|med(?:ical)? rec(?:ord)?(?: no| number|#)?|record (?:no|number|#)|patient id|pat(?:ient)? ?no|"
                r"pid|hosp(?:ital)? ?(?:no|number|#)|nhs(?: no| number)?|ssn|social security(?: no| number)?|acc(?:ount)?(?: no| #)?|"
                r"id|insurance(?: no| number)?)\b\.?[\s:=#-]*[A-Z0-9][A-Z0-9\-/]{2,}", re.IGNORECASE), "[ID]"),
    (re.compile(r"\b(?:tel|tel\.|phone|ph|mobile|mob|cell|fax)\b\.?[\s:=#-]*\+?[\d()][\d\s().\-]{5,}\d", re.IGNORECASE), "[PHONE]"),
    # Bare dates: ISO, day/month/year with . / -, "4 Jul 1961", "July 4, 1961", EDF's "04-JUL-1961".
    (re.compile(rf"\b\d{{4}}[./-]\d{{1,2}}[./-]\d{{1,2}}\b|\b\d{{1,2}}[./-]\d{{1,2}}[./-]\d{{2,4}}\b|"
                rf"\b\d{{1,2}}[\s\-]?{_MONTHS}[\s\-,]*\d{{2,4}}\b|\b{_MONTHS}\s+\d{{1,2}},?\s+\d{{4}}\b", re.IGNORECASE), "[DATE]"),
    # Bare phone numbers: international or grouped digits, at least 7 digits in all.
    (re.compile(r"(?<![\w.])\+\d[\d\s().\-]{6,}\d\b|\(\d{2,4}\)\s*\d[\d\s.\-]{4,}\d\b|\b\d{3}[\s.\-]\d{3,4}[\s.\-]\d{3,4}\b|\b\d{3}-\d{4}\b"), "[PHONE]"),
    (re.compile(r"\b\d+\s+(?:[A-Z][a-z]+\s+){1,3}(?:street|st|road|rd|avenue|ave|lane|ln|boulevard|blvd|drive|dr|court|ct|way|place|pl|"
                r"square|sq|straat|strasse|straße|weg|laan)\b\.?", re.IGNORECASE), "[ADDRESS]"),
    # Record numbers and other long digit runs (no sleep label needs 5 digits in a row).
    (re.compile(r"\b[A-Z]{0,4}-?\d{5,}\b", re.IGNORECASE), "[ID]"),
    # Names introduced by a role or title; EDF uses underscores for spaces in names ("Jane_Doe").
    (re.compile(rf"\b(?:pt|patient|pat|name|surname|first name|last name|mr|mrs|ms|miss|dr|prof|tech|technician|technologist|"
                rf"scorer|scored by|recorded by|nurse|physician|referred by|referring)\b\.?[\s:=-]*{_NAME_WORDS}"), "[NAME]"),
    (re.compile(rf"\b(?:Pt|PT|Patient|PATIENT|Name|NAME|Mr|Mrs|Ms|Dr|Tech)\b\.?[\s:=-]*{_NAME_WORDS}"), "[NAME]"),
    (re.compile(r"\b[A-Z][a-z]+(?:_[A-Z][a-z]+)+\b"), "[NAME]"),
)
# The keyword that introduced a name stays readable ("Pt [NAME]"), the name does not.
_ROLE = re.compile(r"^(?P<role>[A-Za-z. ]+?)\b\.?[\s:=-]*(?=[A-Z])")


def scrub_text(text: str) -> str:
    """`text` with names, dates of birth and other dates, record numbers, phone numbers,
    addresses, e-mails and URLs replaced by placeholders.

    Examples
    --------
    >>> scrub_text("Pt Jane Margaret Doe DOB 1961-07-04 MRN 12345678 tel +1-555-0100")
    'Pt [NAME] DOB [DATE] [ID] [PHONE]'
    >>> scrub_text("Obstructive Apnea")
    'Obstructive Apnea'
    >>> scrub_text("call jane.doe@example.org or see http://x.org/a")
    'call [EMAIL] or see [URL]'
    """
    for pattern, placeholder in _RULES:
        if placeholder == "[NAME]":
            text = pattern.sub(_name_placeholder, text)
        else:
            text = pattern.sub(placeholder, text)
    return re.sub(r"\s{2,}", " ", text).strip()


def _name_placeholder(match: re.Match) -> str:
    found = match.group(0)
    if "_" in found and " " not in found:  # EDF-style Jane_Doe: the whole token is the name
        return "[NAME]"
    role = _ROLE.match(found)
    if role is None or role.group("role").strip() == "":
        return "[NAME]"
    return f"{role.group('role').strip()} [NAME]"
