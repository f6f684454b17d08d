"""The CRM's tables as Django models; the application does not manage their schema."""
from django.db import models
from django.db.models.functions import Now


class Company(models.Model):
    name = models.TextField()
    org_number = models.CharField(max_length=9)
    industry = models.TextField(null=True, blank=True)
    city = models.TextField(null=True, blank=True)
    website = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "companies"
        managed = False


class Contact(models.Model):
    company = models.ForeignKey(Company, null=True, on_delete=models.DO_NOTHING,
                                related_name="contacts")
    first_name = models.TextField()
    last_name = models.TextField()
    email = models.TextField(null=True, blank=True)
    phone = models.TextField(null=True, blank=True)
    street_address = models.TextField(null=True, blank=True)
    postal_code = models.TextField(null=True, blank=True)
    city = models.TextField(null=True, blank=True)
    country = models.TextField(db_default="NO")
    date_of_birth = models.DateField(null=True, blank=True)
    bank_account = models.TextField(null=True, blank=True)
    notes = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    last_activity_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "contacts"
        managed = False


class Activity(models.Model):
    contact = models.ForeignKey(Contact, on_delete=models.DO_NOTHING, related_name="activities")
    kind = models.TextField()
    subject = models.TextField()
    body = models.TextField(null=True, blank=True)
    happened_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "activities"
        managed = False
