"""factory_boy factories for the tracked domain."""

import factory
from factory.django import DjangoModelFactory

from emissions.models import Company, EmissionRecord, Industry, IndustryBenchmark


class IndustryFactory(DjangoModelFactory):
    class Meta:
        model = Industry
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"industry-{n}")
    name = factory.Sequence(lambda n: f"Industry {n}")
    sector = "Materials"


class CompanyFactory(DjangoModelFactory):
    class Meta:
        model = Company

    name = factory.Sequence(lambda n: f"Company {n:05d}")
    country = "DE"
    industry = factory.SubFactory(IndustryFactory)
    is_public = True
    verification_status = "verified"
    data_quality_score = 80


class EmissionRecordFactory(DjangoModelFactory):
    class Meta:
        model = EmissionRecord

    company = factory.SubFactory(CompanyFactory)
    year = 2024
    scope1_tonnes = 100
    scope2_tonnes = 50
    scope3_tonnes = 25
    source = "Annual report"
    verification_status = "verified"


class IndustryBenchmarkFactory(DjangoModelFactory):
    class Meta:
        model = IndustryBenchmark

    industry = factory.SubFactory(IndustryFactory)
    year = 2024
    metric = "total_tonnes"
    p25 = 10
    median = 20
    p75 = 30
    mean = 22
    company_count = 3
