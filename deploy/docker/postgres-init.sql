-- One database per kequn service (services never share tables).
CREATE DATABASE kequn_tiering;
CREATE DATABASE kequn_assignment;
CREATE DATABASE kequn_scoring;
CREATE DATABASE kequn_benefits;
