"""A CRM screen layer in Django, unchanged for pgvakt: contact list, search, company filter,
counts, a per-company report, contact detail with activities, new contact, the contact form
(Django's ModelForm and its full save()), quick edits, imports (bulk_create), transactions, a
raw SQL report and an export over a server-side cursor. Each screen runs through pgvakt and on
the reference database (see appsuite.py) and the outcomes must be identical."""
import datetime

import django
from django.conf import settings

from appsuite import (ROLE, RUN, Suite, admin_params, proxy_params, reference_params,
                      stored_secrets)


def database(params):
    options = {"sslmode": params["sslmode"]}
    if "options" in params:
        options["options"] = params["options"]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params["dbname"], "USER": params["user"], "PASSWORD": params["password"],
        "HOST": params["host"], "PORT": str(params["port"]), "OPTIONS": options,
    }


settings.configure(
    DATABASES={"default": database(proxy_params()), "app": database(proxy_params()),
               "ref": database(reference_params())},
    INSTALLED_APPS=["crmapp"], USE_TZ=True, TIME_ZONE="UTC",
)
django.setup()

from django import forms  # noqa: E402
from django.db import connections, transaction  # noqa: E402
from django.db.models import Count, Max, Q  # noqa: E402
from django.db.utils import Error as DjangoError  # noqa: E402

from crmapp.models import Activity, Company, Contact  # noqa: E402


class ContactForm(forms.ModelForm):
    class Meta:
        model = Contact
        fields = ["company", "first_name", "last_name", "email", "phone", "street_address",
                  "postal_code", "city", "country", "date_of_birth", "bank_account", "notes"]


def sqlstate_of(e):
    if not isinstance(e, DjangoError):
        return None
    return getattr(e.__cause__, "sqlstate", None) or "no sqlstate"


FIELDS = [f.attname for f in Contact._meta.concrete_fields if f.attname not in ("created_at",)]


def row(c):
    return [getattr(c, f) for f in FIELDS]


def new_row(c):
    """A created contact without its generated id (sequences may differ after refusals)."""
    return [getattr(c, f) for f in FIELDS if f != "id"]


suite = Suite("django", sqlstate_of)
same = suite.same
mine = Q(last_name__startswith=f"{RUN}-dj")

same("contact list", lambda db: [row(c) for c in Contact.objects.using(db).order_by("id")[:25]])
same("contact list without personal columns", lambda db: list(
    Contact.objects.using(db).order_by("id").values_list("id", "first_name", "last_name",
                                                         "email")[:25]))
same("search", lambda db: [row(c) for c in Contact.objects.using(db).filter(
    Q(last_name__icontains="sen") | Q(email__icontains="sen")).order_by("id")[:20]])
same("search by email", lambda db: list(Contact.objects.using(db).filter(
    email__icontains="@").order_by("id").values_list("id", "email")[:10]))
same("filter by company", lambda db: [row(c) for c in Contact.objects.using(db).filter(
    company_id=1).order_by("id")])
same("count", lambda db: Contact.objects.using(db).count())
same("count of a filter", lambda db: Contact.objects.using(db).filter(
    company__city__isnull=False).count())
same("contacts per company", lambda db: list(Company.objects.using(db).annotate(
    n=Count("contacts")).order_by("id").values_list("id", "name", "n")))
same("youngest per company", lambda db: list(Company.objects.using(db).annotate(
    youngest=Max("contacts__date_of_birth")).order_by("id").values_list("id", "youngest")))
same("birth years", lambda db: list(Contact.objects.using(db).filter(
    date_of_birth__year__gte=1980).order_by("id").values_list("id", flat=True)[:20]))
same("contact detail with activities", lambda db: [
    (row(c), [(a.kind, a.subject, a.body) for a in c.activities.all().order_by("id")])
    for c in Contact.objects.using(db).prefetch_related("activities").order_by("id")[:10]])
same("activity list with contact names", lambda db: [
    (a.id, a.kind, a.subject, a.contact.first_name, a.contact.last_name)
    for a in Activity.objects.using(db).select_related("contact").order_by("id")[:15]])
same("get", lambda db: row(Contact.objects.using(db).get(id=7)))
same("get a missing contact", lambda db: ["missing", Contact.objects.using(db).filter(
    id=10 ** 9).first()])


def create(db):
    c = Contact.objects.using(db).create(first_name="Nora", last_name=f"{RUN}-dj-new",
                                         email="nora@example.com", company_id=1)
    return new_row(Contact.objects.using(db).get(id=c.id))


same("create", create)


def create_with_secrets(db):
    c = Contact.objects.using(db).create(first_name="Nora", last_name=f"{RUN}-dj-secret",
                                         bank_account="1234.56.78903")
    return new_row(c)


same("create with a bank account", create_with_secrets)

FORM_ID = 11


def form_save(db):
    c = Contact.objects.using(db).get(id=FORM_ID)
    data = forms.model_to_dict(c, fields=ContactForm.Meta.fields)
    data["phone"] = f"+47 400 {RUN[-5:]}"
    form = ContactForm(data, instance=c)
    form.fields["company"].queryset = Company.objects.using(db)
    if not form.is_valid():
        raise AssertionError(f"the form does not validate: {form.errors.as_json()}")
    form.save()
    return row(Contact.objects.using(db).get(id=FORM_ID))


before = stored_secrets(FORM_ID)
same("contact form save", form_save)
after = stored_secrets(FORM_ID)
suite.check("contact form save keeps the stored bank account and birth date",
            before[:2] == after[:2], f"before {before[:2]}, after {after[:2]}")


def form_save_changed_secret(db):
    c = Contact.objects.using(db).get(id=FORM_ID + 1)
    c.bank_account = "9999.99.99999"
    c.save(using=db)
    return row(Contact.objects.using(db).get(id=FORM_ID + 1))


before = stored_secrets(FORM_ID + 1)
same("contact form save with a new bank account", form_save_changed_secret)
suite.check("a refused form save writes nothing", stored_secrets(FORM_ID + 1) == before)


def partial_update(db):
    n = Contact.objects.using(db).filter(id=13).update(city="Bergen")
    c = Contact.objects.using(db).get(id=13)
    c.notes = f"called {RUN}"
    c.save(using=db, update_fields=["notes"])
    return [n, row(Contact.objects.using(db).get(id=13))]


same("partial update", partial_update)


def bulk_create(db):
    Contact.objects.using(db).bulk_create([
        Contact(first_name=f"Imp{i}", last_name=f"{RUN}-dj-bulk", email=f"imp{i}@example.com")
        for i in range(3)])
    return [new_row(c) for c in Contact.objects.using(db).filter(
        last_name=f"{RUN}-dj-bulk").order_by("first_name")]


same("bulk create", bulk_create)


ACTIVITY_AT = datetime.datetime(2026, 1, 2, 9, 30, tzinfo=datetime.timezone.utc)


def transactions(db):
    with transaction.atomic(using=db):
        c = Contact.objects.using(db).get(id=14)
        Activity.objects.using(db).create(contact=c, kind="call", subject=f"{RUN} follow-up")
        Contact.objects.using(db).filter(id=14).update(last_activity_at=ACTIVITY_AT)
    try:
        with transaction.atomic(using=db):
            Contact.objects.using(db).filter(id=14).update(city="Rolled back")
            raise RuntimeError("cancelled")
    except RuntimeError:
        pass
    c = Contact.objects.using(db).get(id=14)
    return [c.city, [a.subject for a in c.activities.filter(subject__startswith=RUN)]]


same("transactions", transactions)


def raw_sql(db):
    with connections[db].cursor() as cur:
        cur.execute("SELECT id, first_name, bank_account, date_of_birth FROM contacts "
                    "WHERE company_id = %s AND last_name <> %s ORDER BY id", [1, "x"])
        return cur.fetchall()


same("raw SQL with parameters", raw_sql)


def raw_sql_names(db):
    with connections[db].cursor() as cur:
        cur.execute("SELECT c.first_name, co.name FROM contacts c JOIN companies co "
                    "ON co.id = c.company_id WHERE c.id < %s ORDER BY c.id", [20])
        return cur.fetchall()


same("raw SQL join", raw_sql_names)
same("export over a server-side cursor", lambda db: [
    row(c) for c in Contact.objects.using(db).order_by("id").iterator(chunk_size=40)])
same("export of names over a server-side cursor", lambda db: list(
    Contact.objects.using(db).order_by("id").values_list("id", "first_name", "email")
    .iterator(chunk_size=40)))
same("rows this run created", lambda db: [new_row(c) for c in Contact.objects.using(db).filter(
    mine).order_by("last_name", "first_name")])

suite.finish()
