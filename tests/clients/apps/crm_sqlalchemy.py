"""The CRM screen layer in SQLAlchemy 2.0 (ORM over psycopg 3, server-side parameters),
unchanged for pgvakt: the same screens as crm_django.py, each run through pgvakt and on the
reference database (see appsuite.py), with identical outcomes required."""
import datetime
from typing import List, Optional

from sqlalchemy import (BigInteger, Date, DateTime, ForeignKey, Text, create_engine, func,
                        or_, select, text, update)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import (DeclarativeBase, Mapped, Session, mapped_column, relationship,
                            selectinload)

from appsuite import RUN, Suite, proxy_params, reference_params, stored_secrets


class Base(DeclarativeBase):
    pass


class Company(Base):
    __tablename__ = "companies"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    org_number: Mapped[str] = mapped_column(Text)
    industry: Mapped[Optional[str]] = mapped_column(Text)
    city: Mapped[Optional[str]] = mapped_column(Text)
    contacts: Mapped[List["Contact"]] = relationship(back_populates="company")


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    company_id: Mapped[Optional[int]] = mapped_column(ForeignKey("companies.id"))
    first_name: Mapped[str] = mapped_column(Text)
    last_name: Mapped[str] = mapped_column(Text)
    email: Mapped[Optional[str]] = mapped_column(Text)
    phone: Mapped[Optional[str]] = mapped_column(Text)
    street_address: Mapped[Optional[str]] = mapped_column(Text)
    postal_code: Mapped[Optional[str]] = mapped_column(Text)
    city: Mapped[Optional[str]] = mapped_column(Text)
    country: Mapped[str] = mapped_column(Text, server_default="NO")
    date_of_birth: Mapped[Optional[datetime.date]] = mapped_column(Date)
    bank_account: Mapped[Optional[str]] = mapped_column(Text)
    notes: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True),
                                                          server_default=func.now())
    last_activity_at: Mapped[Optional[datetime.datetime]] = mapped_column(DateTime(timezone=True))
    company: Mapped[Optional[Company]] = relationship(back_populates="contacts")
    activities: Mapped[List["Activity"]] = relationship(back_populates="contact",
                                                        order_by="Activity.id")


class Activity(Base):
    __tablename__ = "activities"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    kind: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[Optional[str]] = mapped_column(Text)
    happened_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True),
                                                           server_default=func.now())
    contact: Mapped[Contact] = relationship(back_populates="activities")


def engine(params):
    p = dict(params)
    url = (f"postgresql+psycopg://{p.pop('user')}:{p.pop('password')}@{p.pop('host')}:"
           f"{p.pop('port')}/{p.pop('dbname')}")
    return create_engine(url, connect_args=p)


ENGINES = {"app": engine(proxy_params()), "ref": engine(reference_params())}
FIELDS = [c.key for c in Contact.__table__.columns if c.key != "created_at"]


def sqlstate_of(e):
    if not isinstance(e, DBAPIError):
        return None
    return getattr(e.orig, "sqlstate", None) or "no sqlstate"


def row(c):
    return [getattr(c, f) for f in FIELDS]


def new_row(c):
    return [getattr(c, f) for f in FIELDS if f != "id"]


def session_op(fn):
    """Runs `fn(session)` in a fresh session on one side; a failed session is rolled back."""
    def op(side):
        with Session(ENGINES[side]) as s:
            try:
                return fn(s)
            except Exception:
                s.rollback()
                raise
    return op


suite = Suite("sqlalchemy", sqlstate_of)


def same(name, fn):
    suite.same(name, session_op(fn))


same("contact list", lambda s: [row(c) for c in s.scalars(
    select(Contact).order_by(Contact.id).limit(25))])
same("contact list without personal columns", lambda s: [list(r) for r in s.execute(
    select(Contact.id, Contact.first_name, Contact.last_name, Contact.email)
    .order_by(Contact.id).limit(25))])
same("search", lambda s: [row(c) for c in s.scalars(
    select(Contact).where(or_(Contact.last_name.ilike("%sen%"), Contact.email.ilike("%sen%")))
    .order_by(Contact.id).limit(20))])
same("filter by company", lambda s: [row(c) for c in s.scalars(
    select(Contact).where(Contact.company_id == 1).order_by(Contact.id))])
same("count", lambda s: s.scalar(select(func.count()).select_from(Contact)))
same("contacts per company", lambda s: [list(r) for r in s.execute(
    select(Company.id, Company.name, func.count(Contact.id))
    .outerjoin(Contact, Contact.company_id == Company.id)
    .group_by(Company.id, Company.name).order_by(Company.id))])
same("youngest per company", lambda s: [list(r) for r in s.execute(
    select(Contact.company_id, func.max(Contact.date_of_birth))
    .group_by(Contact.company_id).order_by(Contact.company_id))])
same("contact detail with activities", lambda s: [
    (row(c), [(a.kind, a.subject, a.body) for a in c.activities])
    for c in s.scalars(select(Contact).options(selectinload(Contact.activities))
                       .order_by(Contact.id).limit(10))])
same("get", lambda s: row(s.get(Contact, 7)))


def create(s):
    c = Contact(first_name="Nils", last_name=f"{RUN}-sa-new", email="nils@example.com",
                company_id=1)
    s.add(c)
    s.commit()
    return new_row(s.get(Contact, c.id))


same("create", create)


def create_with_secrets(s):
    s.add(Contact(first_name="Nils", last_name=f"{RUN}-sa-secret",
                  date_of_birth=datetime.date(1990, 5, 17)))
    s.commit()
    return "created"


same("create with a birth date", create_with_secrets)

FORM_ID = 21


def form_save(s):
    """A form posts every field back: the loaded values, one of them edited."""
    c = s.get(Contact, FORM_ID)
    posted = {f: getattr(c, f) for f in FIELDS if f != "id"}
    posted["phone"] = f"+47 900 {RUN[-5:]}"
    s.execute(update(Contact).where(Contact.id == FORM_ID).values(**posted))
    s.commit()
    s.expire_all()
    return row(s.get(Contact, FORM_ID))


before = stored_secrets(FORM_ID)
same("contact form save", form_save)
after = stored_secrets(FORM_ID)
suite.check("contact form save keeps the stored bank account and birth date",
            before[:2] == after[:2], f"before {before[:2]}, after {after[:2]}")


def changed_secret(s):
    c = s.get(Contact, FORM_ID + 1)
    c.date_of_birth = datetime.date(1901, 2, 3)
    s.commit()
    return row(c)


before = stored_secrets(FORM_ID + 1)
same("edit of a birth date", changed_secret)
suite.check("a refused edit writes nothing", stored_secrets(FORM_ID + 1) == before)


def partial_update(s):
    c = s.get(Contact, 23)
    c.city = "Trondheim"
    c.notes = f"met {RUN}"
    s.commit()
    return row(s.get(Contact, 23))


same("partial update", partial_update)


def bulk_create(s):
    s.add_all([Contact(first_name=f"Imp{i}", last_name=f"{RUN}-sa-bulk",
                       email=f"sa{i}@example.com") for i in range(3)])
    s.commit()
    return [new_row(c) for c in s.scalars(select(Contact).where(
        Contact.last_name == f"{RUN}-sa-bulk").order_by(Contact.first_name))]


same("bulk create", bulk_create)


def transactions(s):
    with s.begin():
        s.add(Activity(contact_id=24, kind="meeting", subject=f"{RUN} demo"))
        s.execute(update(Contact).where(Contact.id == 24).values(
            last_activity_at=datetime.datetime(2026, 1, 2, 9, 30, tzinfo=datetime.timezone.utc)))
    with s.begin():
        nested = s.begin_nested()
        s.execute(update(Contact).where(Contact.id == 24).values(city="Rolled back"))
        nested.rollback()
    return [s.get(Contact, 24).city, [a.subject for a in s.scalars(
        select(Activity).where(Activity.contact_id == 24, Activity.subject.like(f"{RUN}%")))]]


same("transactions and savepoints", transactions)
same("raw SQL with parameters", lambda s: [list(r) for r in s.execute(text(
    "SELECT id, first_name, bank_account, date_of_birth FROM contacts "
    "WHERE company_id = :company ORDER BY id"), {"company": 1})])
same("raw SQL report", lambda s: [list(r) for r in s.execute(text(
    "SELECT co.name, count(*) AS n, min(c.date_of_birth) FROM contacts c "
    "JOIN companies co ON co.id = c.company_id GROUP BY co.name ORDER BY co.name"))])
same("export with yield_per", lambda s: [row(c) for c in s.scalars(
    select(Contact).order_by(Contact.id).execution_options(yield_per=40))])
same("export of names with yield_per", lambda s: [list(r) for r in s.execute(
    select(Contact.id, Contact.first_name, Contact.email).order_by(Contact.id)
    .execution_options(yield_per=40))])
same("rows this run created", lambda s: [new_row(c) for c in s.scalars(
    select(Contact).where(Contact.last_name.like(f"{RUN}-sa%"))
    .order_by(Contact.last_name, Contact.first_name))])

suite.finish()
