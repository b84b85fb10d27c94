"""Webmail pages for mailbox users and the public client set-up documents.

A user only ever reaches their own Maildir: the path comes from request.user.mailbox; folder
names and message keys from the URL are checked by maildir_reader against what exists.
"""

from __future__ import annotations

import functools

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from mailboxes import usage

from . import clientsetup, compose
from .forms import ComposeForm
from .maildir_reader import INBOX, Maildir, NotFound, folder_label, parse_message
from .rendering import attachment_part
from .rendering import render as render_message
from .sending import SendError, send

PAGE_SIZE = 50
TRASH, JUNK = "Trash", "Junk"


def user_maildir(request):
    mailbox = getattr(request.user, "mailbox", None)
    if mailbox is None:
        raise Http404("no mailbox")
    return mailbox, Maildir(mailbox.maildir)


def page(mailbox, maildir: Maildir, folder: str = INBOX, **extra) -> dict:
    """What every webmail page shows: the mailbox, the folder list, the current folder."""
    return {"mailbox": mailbox, "folder": folder, "folder_label": folder_label(folder),
            "folders": maildir.folder_choices(), **extra}


def mailbox_view(view):
    """Login required; a folder or message that is not in the user's Maildir (any more) is a 404."""
    @login_required
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404("no such folder or message") from exc
    return wrapped


@mailbox_view
def folder(request, folder: str = INBOX):
    mailbox, maildir = user_maildir(request)
    query = request.GET.get("q", "").strip()[:200]
    found = maildir.search(folder, query) if query else maildir.messages(folder)
    listing = Paginator(found, PAGE_SIZE).get_page(request.GET.get("page"))
    usage.recount(mailbox)
    return render(request, "webmail/folder.html", page(
        mailbox, maildir, folder, query=query, page=listing,
        summaries=maildir.summaries(listing.object_list)))


@mailbox_view
def message(request, folder: str, key: str):
    mailbox, maildir = user_maildir(request)
    msg_file = maildir.mark_seen(maildir.find(folder, key))
    msg = parse_message(maildir.read(msg_file))
    allow_images = request.GET.get("images") == "1"
    response = render(request, "webmail/message.html", page(
        mailbox, maildir, folder, file=msg_file, body=render_message(msg, allow_remote_images=allow_images),
        images=allow_images))
    img_src = "'self' data: http: https:" if allow_images else "'self' data:"
    response["Content-Security-Policy"] = (
        f"default-src 'self'; script-src 'self'; img-src {img_src}; style-src 'self' 'unsafe-inline'; "
        "object-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'self'"
    )
    return response


@mailbox_view
def attachment(request, folder: str, key: str, index: int):
    _mailbox, maildir = user_maildir(request)
    part = attachment_part(parse_message(maildir.read(maildir.find(folder, key))), index)
    if part is None:
        raise Http404("no such attachment")
    # Always a download, never rendered in our origin: an HTML attachment must not run here.
    response = HttpResponse(part.get_payload(decode=True) or b"", content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, part.get_filename() or f"part-{index}")
    response["X-Content-Type-Options"] = "nosniff"
    return response


@mailbox_view
@require_POST
def flag(request, folder: str, key: str):
    _mailbox, maildir = user_maildir(request)
    msg_file = maildir.find(folder, key)
    if request.POST.get("seen") == "0":
        maildir.set_flags(msg_file, remove="S")
    else:
        maildir.set_flags(msg_file, add="S")
    return redirect("webmail:folder", folder=folder)


@mailbox_view
@require_POST
def move(request, folder: str, key: str):
    mailbox, maildir = user_maildir(request)
    msg_file = maildir.find(folder, key)
    target = request.POST.get("to", TRASH)
    if target not in (TRASH, JUNK, INBOX):
        raise Http404("no such folder")
    if folder == TRASH and target == TRASH:
        maildir.delete(msg_file)
        messages.success(request, "Message deleted.")
    else:
        maildir.move(msg_file, target)
        messages.success(request, f"Message moved to {target}.")
    usage.recount(mailbox)
    return redirect("webmail:folder", folder=folder)


@mailbox_view
def compose_view(request, folder: str | None = None, key: str | None = None, mode: str = "new"):
    mailbox, maildir = user_maildir(request)
    original = maildir.find(folder, key) if key else None
    senders = sorted(mailbox.send_as_addresses())
    if request.method == "POST":
        form = ComposeForm(request.POST, request.FILES, senders=senders)
        if form.is_valid():
            try:
                send(mailbox, compose.draft_from_form(maildir, form.cleaned_data))
            except SendError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, "Message sent.")
                return redirect("webmail:folder", folder=INBOX)
    else:
        initial = compose.initial(maildir, original, mode, mailbox.address) if original else {}
        form = ComposeForm(initial={"from_address": mailbox.address, **initial}, senders=senders)
    return render(request, "webmail/compose.html", page(mailbox, maildir, folder or INBOX, form=form, mode=mode))


@login_required
def mobileconfig(request):
    mailbox, _maildir = user_maildir(request)
    response = HttpResponse(clientsetup.apple_profile(mailbox.address, mailbox.display_name),
                            content_type="application/x-apple-aspen-config")
    response["Content-Disposition"] = f'attachment; filename="{mailbox.domain.name}.mobileconfig"'
    return response


def autoconfig(request):
    """Thunderbird: /mail/config-v1.1.xml?emailaddress=… on autoconfig.<domain>, then
    /.well-known/autoconfig/mail/config-v1.1.xml on the domain itself."""
    address = request.GET.get("emailaddress", "")
    if not address:
        host = request.get_host().split(":")[0]
        address = "postmaster@" + host.removeprefix("autoconfig.")
    found = clientsetup.hosted(address)
    if found is None:
        raise Http404("not a hosted domain")
    return HttpResponse(clientsetup.thunderbird(found[1].name), content_type="application/xml")


@csrf_exempt
def autodiscover(request):
    """Outlook POSTs an XML request naming the address (no cookies, so no CSRF to protect)."""
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    address = clientsetup.autodiscover_request_address(request.body)
    found = clientsetup.hosted(address) if address else None
    if found is None:
        raise Http404("not a hosted domain")
    return HttpResponse(clientsetup.outlook(found[0]), content_type="application/xml")
