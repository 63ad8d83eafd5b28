"""Shared by the server client tests: arguments and `ferromoe tokenize`."""
import argparse
import json
import subprocess


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True, help="http://127.0.0.1:PORT of a running `ferromoe serve`")
    p.add_argument("--ferromoe", required=True, help="the ferromoe binary (for `ferromoe tokenize`)")
    p.add_argument("--model-file", required=True, help="the GGUF file the server serves")
    p.add_argument("--model", default="tiny", help="the served model name")
    p.add_argument("--api-key", default="sk-no-key-needed")
    return p.parse_args()


def tokenize(a, text, add_special=False):
    cmd = [a.ferromoe, "tokenize", "-m", a.model_file, text]
    if add_special:
        cmd.insert(2, "--add-special")
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def chatml(messages):
    """The tiny models' template (ChatML) with the generation prompt."""
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + "<|im_start|>assistant\n"


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what.splitlines()[0][:120])
