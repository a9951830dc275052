"""Texts the encoder tests embed: prose, maths, code, blanks, Unicode, and one longer than ``max_length``."""

TEXTS = [
    "The parking brake keeps the vehicle from rolling.",
    "To solve this problem, let's break it down step by step.",
    "Let \\( J \\) be Jim's age when Digimon came out. Therefore, \\[ 28 - x = 2J \\].",
    "def f(x):\n    return x + 1",
    "",
    "   ",
    "Dr. Smith paid $3.50 at https://example.com/a?b=1.",
    "ümlaut, 中文, emoji 🙂 and math ∑ x_i",
    "1. first\n2. second\n- bullet",
    "word " * 400,  # longer than max_length: truncated like sentence-transformers
    "Short.",
    "The answer is 42.",
    "So the total cost is 3 * 4 = 12 dollars.",
    "However, this step incorrectly assumes the ages are equal.",
    "Therefore the final answer is \\boxed{7}.",
    "Why do I have to apply the parking brake fully for parking?",
    "It also helps to reduce the load on the transmission locking mechanism.",
    "a",
    "A B C D E F G",
    "Next, calculate John's age when Digimon came out.",
]
