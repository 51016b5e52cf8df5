// tfpconv Android demo: one app module. Needs Google's Maven repository (the Android Gradle
// plugin) and Maven Central (Kotlin, org.tensorflow:tensorflow-lite).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "tfpconv-demo"
include(":app")
