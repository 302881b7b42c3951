"""After training: export (GGUF, Ollama), chat (the result beside the base), push (the Hub).

The work is in core (core.export, core.chat, core.push); these commands parse, print and exit.
"""

from __future__ import annotations

import json

import click

from ftwiz.core.errors import UserError
from ftwiz.core.runs import open_run


def _runs_dir(ctx: click.Context) -> str:
    return (ctx.obj or {}).get("runs_dir", "runs")


@click.command()
@click.argument("run_ref", required=False)
@click.option("--gguf", "as_gguf", is_flag=True, help="Write a GGUF file (llama.cpp, Ollama, LM Studio).")
@click.option("--quant", default="f16", show_default=True,
              help="f16, bf16, f32, q8_0; k-quants (q4_k_m, q5_k_m, q6_k, ...) need llama.cpp's llama-quantize.")
@click.option("--ollama", is_flag=True, help="Also write a Modelfile with the chat template and stop tokens.")
@click.option("--merge/--no-merge", "merge_first", default=True, show_default=True,
              help="Merge the adapter first when merged/ is missing.")
@click.option("--force", is_flag=True, help="Overwrite the GGUF file (and Modelfile) if they exist.")
@click.option("--fetch-converter", is_flag=True, help="Only download llama.cpp's pinned converter into the cache.")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object (progress still on stderr).")
@click.option("--progress-json", is_flag=True,
              help="Progress as one JSON object a line on stdout, sizes in the last (for scripts and the wizard).")
@click.option("-v", "--verbose", is_flag=True, help="Show the converter's own output.")
@click.pass_context
def export(ctx: click.Context, run_ref: str | None, as_gguf: bool, quant: str, ollama: bool, merge_first: bool,
           force: bool, fetch_converter: bool, as_json: bool, progress_json: bool, verbose: bool) -> None:
    """Export a finished run's model: --gguf [--quant TYPE] [--ollama].

    Prints each stage as it goes (size and free disk, merge, convert with its tensors, quantise,
    Modelfile) with its seconds, then the files and their sizes.
    """
    from ftwiz.core import export as core_export

    if fetch_converter:
        click.echo(f"llama.cpp's converter: {core_export.fetch_converter(lambda line: click.echo(line, err=True))}")
        return
    if run_ref is None:
        raise UserError("export: name a run (see `ftwiz runs`)")
    if not as_gguf:
        raise UserError("export: choose a format: --gguf (the one ftwiz writes)")
    quant = core_export.check_quant(quant)
    run = open_run(run_ref, _runs_dir(ctx))

    def progress(step: core_export.ExportProgress) -> None:
        if progress_json:
            click.echo(json.dumps(step.to_dict()))
        else:
            click.echo(step.line(), err=True)

    result = core_export.export_gguf(run, quant, ollama=ollama, merge_first=merge_first, force=force,
                                     progress=progress,
                                     log=(lambda line: click.echo(line, err=True)) if verbose else (lambda line: None))
    if progress_json:
        return
    if as_json:
        click.echo(json.dumps({"gguf": str(result.gguf), "size_bytes": result.size_bytes, "quant": result.quant,
                               "modelfile": str(result.modelfile) if result.modelfile else None,
                               "files": {str(path): size for path, size in result.files},
                               "note": result.template_note}))
        return
    click.echo(f"GGUF ({result.quant}, {core_export.size_text(result.size_bytes)}): {result.gguf}")
    if result.modelfile:
        click.echo(f"Ollama Modelfile: {result.modelfile}")
        if result.template_note:
            click.echo(f"  note: {result.template_note}")
        click.echo(f"  ollama create {run.name} -f {result.modelfile}  then  ollama run {run.name}")


@click.command()
@click.argument("run_ref")
@click.option("--prompt", "prompts", multiple=True,
              help="Ask this and exit (repeatable: one turn each). Without it: an interactive chat.")
@click.option("--temperature", default=0.7, show_default=True, type=float, help="0 = greedy.")
@click.option("--max-new-tokens", default=128, show_default=True, type=int)
@click.option("--no-base", is_flag=True, help="Only the fine-tuned model (half the time).")
@click.option("--json", "as_json", is_flag=True, help="With --prompt: the answers as JSON lines.")
@click.pass_context
def chat(ctx: click.Context, run_ref: str, prompts: tuple[str, ...], temperature: float, max_new_tokens: int,
         no_base: bool, as_json: bool) -> None:
    """Chat with the fine-tuned model, its answer beside the base model's, streamed.

    Interactive commands: /temp T, /max N, /reset (forget the conversation), /quit.
    """
    from ftwiz.core.chat import ChatSession, ChatSettings

    settings = ChatSettings(temperature=temperature, max_new_tokens=max_new_tokens)
    run = open_run(run_ref, _runs_dir(ctx))
    session = ChatSession.open(run)
    sides = ("tuned",) if no_base else ("tuned", "base")
    labels = {"tuned": "fine-tuned", "base": "base"}

    def turn(text: str) -> None:
        answers = {}
        for side in sides:
            if not as_json:
                click.echo(f"{labels[side]:>10}: ", nl=False)
            answers[side] = ""
            for piece in session.stream(side, text, settings):
                answers[side] += piece
                if not as_json:
                    click.echo(piece, nl=False)
            if not as_json:
                click.echo("")
        if as_json:
            click.echo(json.dumps({"prompt": text, **answers}))

    if prompts:
        for text in prompts:
            turn(text)
        return
    how = "chat template" if session.chat_format else "plain prompt (as trained)"
    click.echo(f"chatting with {session.source} ({how}); temperature {settings.temperature}, "
               f"max {settings.max_new_tokens} new tokens; /temp T, /max N, /reset, /quit; \\n in a line is a newline")
    while True:
        try:
            line = click.prompt("you", prompt_suffix="> ", default="", show_default=False)
        except (EOFError, click.exceptions.Abort):
            click.echo("")
            return
        word, _, value = line.strip().partition(" ")
        try:
            if word in ("/quit", "/exit"):
                return
            if word == "/reset":
                session.reset()
                click.echo("(conversation forgotten)")
            elif word == "/temp":
                settings = ChatSettings(temperature=float(value), max_new_tokens=settings.max_new_tokens)
            elif word == "/max":
                settings = ChatSettings(temperature=settings.temperature, max_new_tokens=int(value))
            elif line.strip():
                turn(line.replace("\\n", "\n"))
        except (UserError, ValueError) as exc:
            click.echo(f"ftwiz: {exc}", err=True)


@click.command()
@click.argument("run_ref")
@click.option("--repo", "repo_id", required=True, help="ORG/NAME on the Hugging Face Hub (created if missing).")
@click.option("--merged", is_flag=True, help="Push merged/ (a standalone model) instead of the adapter.")
@click.option("--private", is_flag=True, help="Create the repository private.")
@click.pass_context
def push(ctx: click.Context, run_ref: str, repo_id: str, merged: bool, private: bool) -> None:
    """Upload the adapter (or --merged model) with a model card. Token: HF_TOKEN or `hf auth login`."""
    from ftwiz.core.push import push as push_run

    run = open_run(run_ref, _runs_dir(ctx))
    result = push_run(run, repo_id, merged=merged, private=private)
    click.echo(f"pushed {len(result.files)} files to {result.url}{' (private)' if result.private else ''}")
