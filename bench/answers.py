"""Answer times with the embedded model: the design-card questions and the question battery.

Placeholder while the benchmark is written (the question list is used by the tests).
"""

# The questions of the design card (README, the app's examples, issue 21's trials): each has a
# clear tool, so each is answered with one model call (`assistant.agent.sure_route`).
DESIGN_CARD_QUESTIONS = [
    "When did respiration look abnormal?",
    "Was my oxygen ever low during the night?",
    "Give me a summary of my night",
    "give me a patient-friendly summary of this night",
    "How much deep sleep did I get?",
    "Show me the hypnogram with events",
    "show me the REM periods with rapid eye movements",
    "When did my heart rate look abnormal?",
]
