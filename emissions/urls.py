from django.urls import path

from emissions import views

urlpatterns = [
    path("", views.overview_page, name="overview"),
    path("companies/", views.directory_page, name="directory"),
    path("companies/<uuid:company_id>/", views.company_page, name="company"),
    path("industries/<slug:slug>/", views.industry_page, name="industry"),
    path("api/companies/", views.CompanyListView.as_view(), name="api-company-list"),
    path("api/companies/<uuid:company_id>/", views.CompanyDetailView.as_view(), name="api-company"),
    path("api/industries/", views.IndustryListView.as_view(), name="api-industry-list"),
    path("api/industries/<slug:slug>/", views.IndustryDetailView.as_view(), name="api-industry"),
    path("api/overview/", views.OverviewView.as_view(), name="api-overview"),
    path("api/overview/changes/", views.RecentChangesView.as_view(), name="api-overview-changes"),
]
